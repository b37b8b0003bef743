package tokenclient

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestScrub(t *testing.T) {
	ep := Endpoint{ClientID: testClientID, ClientSecret: "a+b/c=d"}
	cases := map[string]struct {
		red  redactor
		in   string
		want string
	}{
		"plain words survive":                         {nil, "The client is not authorized", "The client is not authorized"},
		"line breaks become spaces, bells vanish":     {nil, "bad\x07 grant\r\n\tnow", "bad grant now"},
		"a bidi override vanishes":                    {nil, "ok\u202egnp.exe", "okgnp.exe"},
		"a JWT is redacted":                           {nil, "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl rejected", "token [redacted] rejected"},
		"an unsigned JWT is redacted":                 {nil, "got eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. back", "got [redacted] back"},
		"a long hex run is redacted":                  {nil, "digest " + strings.Repeat("deadbeef", 8) + " seen", "digest [redacted] seen"},
		"a long base64 run is redacted":               {nil, "blob aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8=.", "blob [redacted]."},
		"a 31-character run survives":                 {nil, strings.Repeat("x", 31), strings.Repeat("x", 31)},
		"host names and versions survive":             {nil, "see https://id.centraldispatch.com/docs for v1.2.3", "see https://id.centraldispatch.com/docs for v1.2.3"},
		"long dotted host names survive":              {nil, "host identity-server.production-cluster.internal", "host identity-server.production-cluster.internal"},
		"a JWE with five segments is redacted":        {nil, "eyJhbGciOiJSU0EtT0FFUCJ9.a2V5.aXY.Y2lwaGVy.dGFn!", "[redacted]!"},
		"the request's own secret is redacted":        {newRedactor(ep), "secret a+b/c=d is wrong", "secret [redacted] is wrong"},
		"the secret as the form encoded it":           {newRedactor(ep), "body client_secret=a%2Bb%2Fc%3Dd", "body client_secret=[redacted]"},
		"the Basic header that carried the secret":    {newRedactor(ep), "header Basic Y2xpZW50LTE6YSUyQmIlMkZjJTNEZA==", "header Basic [redacted]"},
		"a short spent token is redacted":             {newRedactor(Endpoint{}, "rt1"), "token rt1 reused", "token [redacted] reused"},
		"a secret broken up by a control character":   {newRedactor(Endpoint{}, "rt-secret"), "token rt-\x00secret", "token [redacted]"},
		"a one-letter secret does not eat the marker": {newRedactor(Endpoint{}, "e"), "see", "s[redacted][redacted]"},
		"long text is cut to 200 runes":               {nil, strings.Repeat("é ", 150), strings.Repeat("é ", 99) + "é…"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.red.scrub(tc.in)); diff != "" {
				t.Errorf("scrub (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	date := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	unix := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	cases := map[string]struct {
		header map[string]string
		want   time.Duration
	}{
		"absent: 30 s":                                  {nil, 30 * time.Second},
		"seconds":                                       {map[string]string{"Retry-After": " 90 "}, 90 * time.Second},
		"zero: a second, never no wait at all":          {map[string]string{"Retry-After": "0"}, time.Second},
		"negative: 30 s":                                {map[string]string{"Retry-After": "-5"}, 30 * time.Second},
		"more than an hour: an hour":                    {map[string]string{"Retry-After": "99999999999999999"}, time.Hour},
		"an HTTP date against our clock":                {map[string]string{"Retry-After": date(2 * time.Minute)}, 2 * time.Minute},
		"an HTTP date against the answer's Date header": {map[string]string{"Retry-After": date(time.Hour + 2*time.Minute), "Date": date(time.Hour)}, 2 * time.Minute},
		"an HTTP date in the past: a second":            {map[string]string{"Retry-After": date(-time.Minute)}, time.Second},
		"garbage: 30 s":                                 {map[string]string{"Retry-After": "tomorrow"}, 30 * time.Second},
		// Okta says when its window resets instead (X-Rate-Limit-Reset, Unix seconds),
		// others the IETF draft's RateLimit-Reset (seconds from now).
		"Okta's reset time against the answer's Date": {map[string]string{"X-Rate-Limit-Reset": unix(time.Hour + 90*time.Second), "Date": date(time.Hour)}, 90 * time.Second},
		"Okta's reset time against our clock":         {map[string]string{"X-Rate-Limit-Reset": unix(45 * time.Second)}, 45 * time.Second},
		"X-RateLimit-Reset, the other spelling":       {map[string]string{"X-RateLimit-Reset": unix(2 * time.Minute)}, 2 * time.Minute},
		"a reset time already past: a second":         {map[string]string{"X-Rate-Limit-Reset": unix(-time.Minute)}, time.Second},
		"RateLimit-Reset in seconds":                  {map[string]string{"RateLimit-Reset": "20"}, 20 * time.Second},
		"Retry-After wins over a reset time":          {map[string]string{"Retry-After": "5", "X-Rate-Limit-Reset": unix(time.Minute)}, 5 * time.Second},
		"a garbled reset time: 30 s":                  {map[string]string{"X-Rate-Limit-Reset": "soon"}, 30 * time.Second},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.header {
				h.Set(k, v)
			}
			if got, _ := retryAfter(h, now, 0); got != tc.want {
				t.Errorf("retryAfter = %s, want %s", got, tc.want)
			}
		})
	}
}
