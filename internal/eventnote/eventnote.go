// Package eventnote keeps the note of every Event the operator records within what the
// API server takes. events.k8s.io/v1 refuses a note over 1024 bytes, and client-go's
// recorder neither cuts nor retries it: the Event is lost, and it is usually the one that
// says what to fix (a condition message quoting many long scopes, an identity server's
// long error_description). Every Eventf call passes its note through Of.
package eventnote

import (
	"fmt"
	"unicode/utf8"
)

// MaxBytes is the API server's limit on an Event's note (events.k8s.io/v1 note;
// core/v1 message is converted to it).
const MaxBytes = 1024

// ellipsis ends a note that was cut.
const ellipsis = "…"

// Of is the note format and args make, cut to MaxBytes on a rune boundary and ended
// with "…" when it is longer. Pass it to Eventf as the argument of "%s".
func Of(format string, args ...any) string {
	return Cut(fmt.Sprintf(format, args...))
}

// Cut is note cut to MaxBytes as Of cuts it.
func Cut(note string) string {
	if len(note) <= MaxBytes {
		return note
	}
	n := MaxBytes - len(ellipsis)
	for n > 0 && !utf8.RuneStart(note[n]) {
		n--
	}
	return note[:n] + ellipsis
}
