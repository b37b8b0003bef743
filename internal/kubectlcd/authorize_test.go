package kubectlcd

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestConfirm(t *testing.T) {
	cases := map[string]struct {
		terminal bool
		yes      bool
		typed    string
		wantErr  string
		asked    bool
	}{
		"--yes needs no terminal":                 {yes: true},
		"no terminal and no --yes is refused":     {wantErr: "pass --yes"},
		"y on a terminal proceeds":                {terminal: true, typed: "y\n", asked: true},
		"YES on a terminal proceeds":              {terminal: true, typed: "YES\n", asked: true},
		"enter on a terminal means no":            {terminal: true, typed: "\n", wantErr: "not confirmed", asked: true},
		"anything else means no":                  {terminal: true, typed: "sure\n", wantErr: "not confirmed", asked: true},
		"end of input on a terminal means no too": {terminal: true, typed: "", wantErr: "not confirmed", asked: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var errOut bytes.Buffer
			ao := &authorizeOptions{yes: tc.yes, options: &options{env: Env{
				Streams:    genericiooptions.IOStreams{In: strings.NewReader(tc.typed), Out: &bytes.Buffer{}, ErrOut: &errOut},
				IsTerminal: func(any) bool { return tc.terminal },
			}}}
			err := ao.confirm("Start?")
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
			if asked := strings.Contains(errOut.String(), "Start? [y/N]: "); asked != tc.asked {
				t.Errorf("asked %v, want %v: %q", asked, tc.asked, errOut.String())
			}
		})
	}
}

func TestProgressWithoutATerminalPrintsEachChangeOnce(t *testing.T) {
	var buf bytes.Buffer
	c := clocktesting.NewFakeClock(now)
	p := newProgress(&buf, false, c, now.Add(time.Minute))
	for _, s := range []string{"waiting for the customer to log in", "waiting for the customer to log in", "the customer logged in"} {
		p.set(s)
	}
	p.printf(&buf, "a line\n")
	p.done()
	want := "Waiting for the customer to log in\nThe customer logged in\na line\n"
	if buf.String() != want {
		t.Errorf("progress wrote %q, want %q", buf.String(), want)
	}
}

func TestProgressHeldWhileThePersonTypes(t *testing.T) {
	var buf bytes.Buffer
	p := &progress{w: &buf, tty: true, clock: clocktesting.NewFakeClock(now), deadline: now.Add(time.Minute), text: "waiting"}
	p.draw()
	p.hold()
	buf.Reset()
	p.draw() // what the spinner's tick does
	if buf.Len() != 0 {
		t.Errorf("the spinner drew over the person's input: %q", buf.String())
	}
	p.release()
	p.draw()
	if !strings.Contains(buf.String(), "Waiting [60s left]") {
		t.Errorf("not redrawn after release: %q", buf.String())
	}
}

func TestProgressOnATerminalRedrawsOneLine(t *testing.T) {
	var buf syncWriter
	c := clocktesting.NewFakeClock(now)
	p := newProgress(&buf, true, c, now.Add(2*time.Minute))
	p.set("waiting for the customer to log in")
	p.printf(&buf, "the link\n")
	p.done()
	got := buf.String()
	for _, want := range []string{"\r\x1b[K⠋ Waiting for the customer to log in [2m left]", "\r\x1b[Kthe link\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("terminal output %q lacks %q", got, want)
		}
	}
	if !strings.HasSuffix(got, "\r\x1b[K") {
		t.Errorf("the spinner line is not cleared at the end: %q", got)
	}
}

// syncWriter is a buffer the spinner goroutine and the test may both write.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
