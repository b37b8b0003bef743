package rotation

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

func TestDecide(t *testing.T) {
	const req = "request-1"
	fresh := &Schedule{Issued: t0.Add(-10 * time.Minute), RenewAt: t0.Add(10 * time.Minute), ExpiresAt: t0.Add(20 * time.Minute)}
	due := &Schedule{Issued: t0.Add(-25 * time.Minute), RenewAt: t0.Add(-time.Minute), ExpiresAt: t0.Add(5 * time.Minute)}
	terminal := &Failure{Request: req, Reason: "InvalidClient", Time: t0.Add(-time.Minute), Attempts: 1}
	retrying := &Failure{Request: req, Reason: "TokenRequestFailed", Time: t0.Add(-time.Second), Attempts: 2, Retry: t0.Add(9 * time.Second)}
	retryDue := &Failure{Request: req, Reason: "TokenRequestFailed", Time: t0.Add(-time.Minute), Attempts: 2, Retry: t0.Add(-time.Second)}
	stored := func(m Mark) *Refresh {
		return &Refresh{Hash: "sha256:current", Mark: m, Self: "me", HolderTimeout: time.Minute}
	}
	ours := Mark{Hash: "sha256:current", Holder: "me", Since: t0.Add(-time.Minute), Attempts: 1}
	theirs := Mark{Hash: "sha256:current", Holder: "other", Since: t0.Add(-10 * time.Second), Attempts: 1}
	deadTheirs := Mark{Hash: "sha256:current", Holder: "other", Since: t0.Add(-2 * time.Minute), Attempts: 1}
	resent := Mark{Hash: "sha256:current", Holder: "me", Since: t0.Add(-time.Minute), Attempts: 2}
	stale := Mark{Hash: "sha256:previous", Holder: "other", Since: t0.Add(-10 * time.Second), Attempts: 1}
	newMark := func(attempts int) Mark {
		return Mark{Hash: "sha256:current", Holder: "me", Since: t0, Attempts: attempts}
	}

	cases := map[string]struct {
		in   Input
		want Decision
	}{
		"a credential without a token asks for one": {
			in: Input{Request: req}, want: Send{},
		},
		"a credential whose token is fresh waits until its renewal time": {
			in: Input{Request: req, Current: fresh}, want: Wait{Until: fresh.RenewAt},
		},
		"a credential whose token is due asks for a new one": {
			in: Input{Request: req, Current: due}, want: Send{},
		},
		"a request refused for good is not sent again, even when the token is due": {
			in: Input{Request: req, Current: due, Failure: terminal}, want: Stop{Failure: *terminal},
		},
		"a refusal of another request does not stop a changed one": {
			in: Input{Request: "request-2", Failure: terminal}, want: Send{},
		},
		"a failure still backing off waits for its retry time": {
			in: Input{Request: req, Failure: retrying}, want: Backoff{Until: retrying.Retry},
		},
		"a failure whose retry time has come is retried": {
			in: Input{Request: req, Failure: retryDue}, want: Send{},
		},
		"a fresh token is not renewed early because an old failure is still backing off": {
			in: Input{Request: req, Current: fresh, Failure: retrying}, want: Wait{Until: fresh.RenewAt},
		},
		"a result held in memory is stored before anything else": {
			in: Input{Request: req, Pending: true, Failure: terminal, Refresh: stored(ours)}, want: Persist{},
		},
		"a grant whose token is due marks it and spends it": {
			in: Input{Request: req, Current: due, Refresh: stored(Mark{})}, want: Send{Mark: newMark(1)},
		},
		"a grant whose token is fresh waits": {
			in: Input{Request: req, Current: fresh, Refresh: stored(Mark{})}, want: Wait{Until: fresh.RenewAt},
		},
		"a mark left on an older token is overwritten, not resumed": {
			in: Input{Request: req, Current: due, Refresh: stored(stale)}, want: Send{Mark: newMark(1)},
		},
		"our own unanswered mark is resumed once, counted before the resend": {
			in: Input{Request: req, Current: fresh, Refresh: stored(ours)}, want: Send{Resume: true, Mark: newMark(2)},
		},
		"a resumed rotation still waits out the backoff of its last failure": {
			in: Input{Request: req, Failure: retrying, Refresh: stored(ours)}, want: Backoff{Until: retrying.Retry},
		},
		"another process's recent mark is a live rotation: hold until it times out": {
			in: Input{Request: req, Current: due, Refresh: stored(theirs)}, want: Hold{Until: theirs.Since.Add(time.Minute)},
		},
		"an old mark is still held for a full timeout after this process became leader": {
			in:   Input{Request: req, Current: due, Refresh: &Refresh{Hash: "sha256:current", Mark: deadTheirs, Self: "me", HolderTimeout: time.Minute, ActiveSince: t0.Add(-10 * time.Second)}},
			want: Hold{Until: t0.Add(50 * time.Second)},
		},
		"another process's mark older than the holder timeout is a dead process's: resume": {
			in: Input{Request: req, Current: due, Refresh: stored(deadTheirs)}, want: Send{Resume: true, Mark: newMark(2)},
		},
		"a token sent twice without an answer is never sent a third time": {
			in: Input{Request: req, Current: due, Refresh: stored(resent)}, want: Abandon{},
		},
		"a rejection remembered for this token stops before the mark is looked at": {
			in: Input{Request: req, Failure: terminal, Refresh: stored(resent)}, want: Stop{Failure: *terminal},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tc.in.Now = t0
			if diff := cmp.Diff(tc.want, Decide(tc.in)); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMarksRoundTripThroughAnnotations(t *testing.T) {
	cases := map[string]Mark{
		"a first attempt":         {Hash: "sha256:ab", Holder: "host-1a2b", Since: t0, Attempts: 1},
		"the one allowed resend":  {Hash: "sha256:ab", Holder: "host-1a2b", Since: t0, Attempts: 2},
		"no mark at all is empty": {},
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			ann := map[string]string{"unrelated": "kept"}
			WriteMark(ann, m)
			if diff := cmp.Diff(m, ReadMark(ann)); diff != "" {
				t.Errorf("mark changed on the way (-want +got):\n%s", diff)
			}
			ClearMark(ann)
			if diff := cmp.Diff(map[string]string{"unrelated": "kept"}, ann); diff != "" {
				t.Errorf("ClearMark left (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAMarkWrittenByAnOlderReleaseIsAFirstAttempt(t *testing.T) {
	ann := map[string]string{
		"cd.credops.io/rotation-in-flight": "sha256:ab",
		"cd.credops.io/rotation-holder":    "host-1a2b@2026-11-29T10:00:00Z",
	}
	want := Mark{Hash: "sha256:ab", Holder: "host-1a2b", Since: t0, Attempts: 1}
	if diff := cmp.Diff(want, ReadMark(ann)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
