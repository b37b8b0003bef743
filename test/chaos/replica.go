package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// leaseAcquired is what client-go's leader election logs when a process becomes leader.
const leaseAcquired = "successfully acquired lease"

var errStopped = errors.New("replica stopped")

// Replica is one manager replica: like a Deployment's pod, it always runs a process and
// starts a new one when the current one ends, after a short crash back-off.
type Replica struct {
	Name string
	Bin  string
	Args []string
	// LogDir receives one log file per process.
	LogDir   string
	Timeline *Timeline

	mu      sync.Mutex
	cur     *running
	stopped bool
	starts  int
	done    chan struct{}
}

type running struct {
	cmd    *exec.Cmd
	rec    *ProcRecord
	exited chan struct{}
}

// Start runs the first process and keeps the replica running until Stop.
func (r *Replica) Start() error {
	r.done = make(chan struct{})
	p, err := r.spawn()
	if err != nil {
		return err
	}
	go r.supervise(p)
	return nil
}

func (r *Replica) spawn() (*running, error) {
	r.mu.Lock()
	r.starts++
	n := r.starts
	r.mu.Unlock()
	logFile, err := os.Create(filepath.Join(r.LogDir, fmt.Sprintf("manager-%s-%03d.log", r.Name, n)))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(r.Bin, r.Args...)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &running{cmd: cmd, exited: make(chan struct{})}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, errStopped
	}
	p.rec = r.Timeline.started(r.Name, cmd.Process.Pid, time.Now())
	r.cur = p
	r.mu.Unlock()
	go r.watchOutput(p, pipe, logFile)
	return p, nil
}

// watchOutput copies the process's output to its log file and notes the moment it
// becomes leader. Lines are read as they come, so the time is the harness's own.
func (r *Replica) watchOutput(p *running, pipe io.Reader, logFile *os.File) {
	defer logFile.Close()
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		_, _ = fmt.Fprintln(logFile, line)
		if strings.Contains(strings.ToLower(line), leaseAcquired) {
			now := time.Now()
			r.Timeline.update(func() {
				if p.rec.LeaderAt.IsZero() {
					p.rec.LeaderAt = now
				}
			})
		}
	}
}

// supervise waits for each process to end and starts the next, backing off when
// processes die young (as kubelet does, but in seconds).
func (r *Replica) supervise(p *running) {
	defer close(r.done)
	backoff := 500 * time.Millisecond
	for {
		err := p.cmd.Wait()
		now := time.Now()
		code := 0
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			code = exitErr.ExitCode()
		}
		r.Timeline.update(func() {
			p.rec.Exited, p.rec.ExitCode = now, code
			if p.rec.Cause == ExitRunning {
				p.rec.Cause = ExitSelf
			}
		})
		close(p.exited)
		r.mu.Lock()
		stopped := r.stopped
		r.mu.Unlock()
		if stopped {
			return
		}
		if now.Sub(p.rec.Started) > 30*time.Second || p.rec.Cause != ExitSelf {
			backoff = 500 * time.Millisecond
		} else {
			backoff = min(2*backoff, 8*time.Second)
		}
		if p.rec.Cause == ExitSelf {
			// A process that ends by itself is restarted after a back-off, as by kubelet;
			// one the harness killed is replaced at once.
			<-time.After(backoff)
		}
		next, err := r.spawn()
		if errors.Is(err, errStopped) {
			return
		}
		if err != nil {
			r.Timeline.note(fmt.Sprintf("replica %s: cannot restart: %v", r.Name, err))
			return
		}
		p = next
	}
}

// Current returns the running process's record, or false between processes.
func (r *Replica) Current() (ProcRecord, bool) {
	r.mu.Lock()
	p := r.cur
	r.mu.Unlock()
	if p == nil {
		return ProcRecord{}, false
	}
	var rec ProcRecord
	r.Timeline.update(func() { rec = *p.rec })
	return rec, rec.Exited.IsZero()
}

// Signal sends sig to the current process if its pid is pid, records why it will end,
// and waits for it to end (bounded by ctx). The replica then starts a new process.
func (r *Replica) Signal(ctx context.Context, pid int, sig syscall.Signal) error {
	r.mu.Lock()
	p := r.cur
	r.mu.Unlock()
	if p == nil || p.rec.PID != pid {
		return fmt.Errorf("replica %s no longer runs pid %d", r.Name, pid)
	}
	cause := ExitSIGTERM
	if sig == syscall.SIGKILL {
		cause = ExitSIGKILL
	}
	now := time.Now()
	r.Timeline.update(func() {
		if p.rec.Cause == ExitRunning {
			p.rec.Cause, p.rec.Signaled = cause, now
		}
	})
	if err := p.cmd.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pid %d did not exit after %s: %w", pid, sig, ctx.Err())
	}
}

// Shutdown ends the replica gracefully: no more restarts, the current process gets
// SIGTERM (so a leader finishes its rotations) and is waited for, bounded by ctx.
func (r *Replica) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.stopped = true
	p := r.cur
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	r.Timeline.update(func() {
		if p.rec.Cause == ExitRunning {
			p.rec.Cause, p.rec.Signaled = ExitSIGTERM, time.Now()
		}
	})
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("replica %s did not stop after SIGTERM: %w", r.Name, ctx.Err())
	}
}

// Stop ends the replica: no more restarts, the current process is killed.
func (r *Replica) Stop() {
	r.mu.Lock()
	r.stopped = true
	p := r.cur
	r.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}
