package eventnote

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestANoteIsCutToTheAPIServersLimitOnARuneBoundary(t *testing.T) {
	cases := map[string]struct {
		note string
		cut  bool
	}{
		"a short note is left as it is":       {note: "Access token is in Secret acme-token"},
		"a note of exactly the limit is kept": {note: strings.Repeat("a", MaxBytes)},
		"a long ASCII note is cut":            {note: strings.Repeat("a", 5000), cut: true},
		"a cut falling inside a rune backs off to its start": {
			note: strings.Repeat("a", MaxBytes-4) + strings.Repeat("é", 10), cut: true,
		},
		"four-byte runes": {note: strings.Repeat("😀", 400), cut: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Of("%s", tc.note)
			if !tc.cut {
				if got != tc.note {
					t.Errorf("note changed: %d bytes to %d", len(tc.note), len(got))
				}
				return
			}
			if len(got) > MaxBytes || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
				t.Errorf("cut note of %d bytes (valid UTF-8 %t), want at most %d ending in …", len(got), utf8.ValidString(got), MaxBytes)
			}
			if kept := strings.TrimSuffix(got, "…"); !strings.HasPrefix(tc.note, kept) || len(kept) < MaxBytes-len("…")-utf8.UTFMax {
				t.Errorf("kept %d bytes of the note's start, want all that fits", len(kept))
			}
		})
	}
}
