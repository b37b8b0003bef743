package secrets

import (
	"strings"
	"testing"
	"unicode"

	corev1 "k8s.io/api/core/v1"
)

func TestSecretValueRejectsWhatCannotBeACredential(t *testing.T) {
	cases := map[string]struct {
		value   []byte
		want    string
		wantErr string
	}{
		"a plain value":                       {[]byte("abc123"), "abc123", ""},
		"whitespace from echo is trimmed":     {[]byte("  abc123\n"), "abc123", ""},
		"an empty value":                      {[]byte(""), "", "is empty"},
		"only whitespace":                     {[]byte(" \n\t"), "", "is empty"},
		"binary bytes":                        {[]byte{0x00, 0xff, 0x01}, "", "not printable"},
		"an embedded newline":                 {[]byte("abc\ndef"), "", "not printable"},
		"a whole file pasted in (over 4 KiB)": {[]byte(strings.Repeat("a", 5000)), "", "longer than 4096"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := &corev1.Secret{Data: map[string][]byte{"k": tc.value}}
			got, err := Value(s, "k")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), string(tc.value)) && len(tc.value) > 0 && strings.TrimSpace(string(tc.value)) != "" {
					t.Errorf("the error repeats the value")
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := Value(&corev1.Secret{}, "missing"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a missing key: %v", err)
	}
}

func FuzzSecretValue(f *testing.F) {
	for _, seed := range []string{"abc", " abc\n", "", "\x00\xff", strings.Repeat("x", 4097), "ünïcødé", "a\u202eb"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Value(&corev1.Secret{Data: map[string][]byte{"k": b}}, "k")
		if err != nil {
			if strings.Contains(err.Error(), string(b)) && strings.TrimSpace(string(b)) != "" && len(b) > 3 {
				t.Errorf("error %q repeats the value", err)
			}
			return
		}
		if v == "" || len(v) > MaxValue || v != strings.TrimSpace(v) {
			t.Errorf("accepted %q", v)
		}
		for _, r := range v {
			if !unicode.IsPrint(r) {
				t.Errorf("accepted a non-printable rune %U", r)
			}
		}
	})
}
