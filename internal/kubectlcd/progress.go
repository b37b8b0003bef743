package kubectlcd

import (
	"fmt"
	"io"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/utils/clock"
)

// progress shows what a wait is waiting for: on a terminal, one line redrawn with a
// spinner and the time left; otherwise a plain line each time the state changes, so
// logs of CI jobs stay readable.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	clock    clock.Clock
	deadline time.Time
	text     string
	frame    int
	drawn    bool
	held     bool // while the person types, the line is theirs
	stop     chan struct{}
	stopped  chan struct{}
}

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

func newProgress(w io.Writer, tty bool, c clock.Clock, deadline time.Time) *progress {
	p := &progress{w: w, tty: tty, clock: c, deadline: deadline, stop: make(chan struct{}), stopped: make(chan struct{})}
	if !tty {
		close(p.stopped)
		return p
	}
	go p.spin()
	return p
}

func (p *progress) spin() {
	defer close(p.stopped)
	t := time.NewTicker(120 * time.Millisecond) // animation runs on wall time
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.frame++
			p.draw()
			p.mu.Unlock()
		}
	}
}

// set changes what is shown; a terminal redraws, otherwise a changed text is a new line.
func (p *progress) set(text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if text == p.text {
		return
	}
	p.text = text
	if p.tty {
		p.draw()
		return
	}
	fmt.Fprintf(p.w, "%s\n", capitalize(text))
}

// draw rewrites the spinner line; the caller holds mu.
func (p *progress) draw() {
	if p.text == "" || p.held {
		return
	}
	left := p.deadline.Sub(p.clock.Now()).Truncate(time.Second)
	if left < 0 {
		left = 0
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s %s [%s left]", spinner[p.frame%len(spinner)], capitalize(p.text), duration.HumanDuration(left))
	p.drawn = true
}

// clear removes the spinner line before other output; the caller holds mu.
func (p *progress) clear() {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

// printf writes a line to out without mangling the spinner line.
func (p *progress) printf(out io.Writer, format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(out, format, a...)
	if p.tty {
		p.draw()
	}
}

// hold stops redrawing (and clears the line) while the person types; release resumes.
func (p *progress) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	p.held = true
}

func (p *progress) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = false
}

// done stops the spinner and clears its line.
func (p *progress) done() {
	p.mu.Lock()
	if p.tty {
		select {
		case <-p.stop:
		default:
			close(p.stop)
		}
	}
	p.mu.Unlock()
	<-p.stopped
	p.mu.Lock()
	p.clear()
	p.mu.Unlock()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	r := []rune(s)
	if r[0] >= 'a' && r[0] <= 'z' {
		r[0] -= 'a' - 'A'
	}
	return string(r)
}
