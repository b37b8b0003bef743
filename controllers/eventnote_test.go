package controllers

import (
	"strings"
	"testing"
	"unicode/utf8"

	"k8s.io/client-go/tools/events"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// events.k8s.io/v1 refuses an Event whose note is over 1024 bytes, and client-go neither
// cuts nor retries it: the one Event that says what to fix would be lost. A condition
// message quoting many long scopes, or an identity server's long error_description, is
// longer than that; every note built from one is cut to fit, and still says what it
// says first.
func TestAnEventNoteBuiltFromALongMessageFitsTheAPIServersLimit(t *testing.T) {
	long := "The identity server refused a requested scope: invalid_scope (requested: " +
		strings.Repeat("https://api.centraldispatch.example/auth/marketplace.listings.readonly é ", 30) + ")"
	cases := map[string]struct {
		typ, reason, eventReason string
	}{
		"Ready turning False":             {cdv1.ReadyCondition, cdv1.ScopeNotAllowedReason, cdv1.ScopeNotAllowedReason},
		"FlowMisuse's onset":              {cdv1.FlowMisuseCondition, cdv1.GrantTypeNotAllowedReason, cdv1.FlowMisuseDetectedReason},
		"ReauthorizationRequired's onset": {cdv1.ReauthorizationRequiredCondition, cdv1.RefreshTokenRejectedReason, cdv1.ReauthorizationRequiredReason},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			g := grantObj("acme", "acme-refresh")
			c := newConditions(&g.Status.Conditions, g.Generation, epoch)
			c.set(tc.typ, tc.typ != cdv1.ReadyCondition, tc.reason, long)
			rec := events.NewFakeRecorder(10)
			c.recordChanges(rec, g)
			if len(rec.Events) != 1 {
				t.Fatalf("%d events, want 1", len(rec.Events))
			}
			prefix := "Warning " + tc.eventReason + " "
			note, ok := strings.CutPrefix(<-rec.Events, prefix)
			if !ok {
				t.Fatalf("event %q, want a %s warning", note, tc.eventReason)
			}
			if len(note) > 1024 || !utf8.ValidString(note) {
				t.Errorf("note of %d bytes (valid UTF-8: %t), want at most 1024: the API server refuses it", len(note), utf8.ValidString(note))
			}
			if !strings.Contains(note, long[:200]) || !strings.HasSuffix(note, "…") {
				t.Errorf("note %q, want the message's start, cut with …", note)
			}
		})
	}
	// A short note is left as it is.
	g := grantObj("acme", "acme-refresh")
	c := newConditions(&g.Status.Conditions, g.Generation, epoch)
	c.set(cdv1.ReadyCondition, false, cdv1.ScopeNotAllowedReason, "short")
	rec := events.NewFakeRecorder(10)
	c.recordChanges(rec, g)
	if e := <-rec.Events; e != "Warning "+cdv1.ScopeNotAllowedReason+" short" {
		t.Errorf("event %q, want the short message whole", e)
	}
}
