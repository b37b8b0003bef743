package cdsandbox

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// JournalPath is where EnableJournal serves the journal (GET, read-only).
const JournalPath = "/sandbox/journal"

// RequestIDHeader names a token request for the journal: a proxy or client that sets it
// can join its own records (what it did with the answer) to the sandbox's.
const RequestIDHeader = "X-Request-Id"

// JournalEntry is the sandbox's record of one token request it processed: the identity
// server's own account of which refresh token was presented when, for which grant,
// whether it was consumed, and whether the answer was written to the connection. It
// holds hashes (TokenHash), never a token, secret or code.
type JournalEntry struct {
	// Seq numbers entries in the order the sandbox processed the requests, from 1.
	Seq int64 `json:"seq"`
	// Time is when the request was processed.
	Time time.Time `json:"time"`
	// RequestID is the request's X-Request-Id header, when it had one.
	RequestID string `json:"requestID,omitempty"`
	GrantType string `json:"grantType"`
	ClientID  string `json:"clientID,omitempty"`
	// Grant is the customer grant the request concerns (the presented refresh token's,
	// or the one a code exchange created), "" when there is none.
	Grant string `json:"grant,omitempty"`
	// Presented is the hash of the refresh token presented, for refresh_token requests.
	Presented string `json:"presented,omitempty"`
	// Consumed is true when this request spent the presented refresh token.
	Consumed bool `json:"consumed,omitempty"`
	// Reused is true when the presented refresh token had been spent before: the
	// request was a replay, and the grant is revoked.
	Reused bool `json:"reused,omitempty"`
	// Revoked is true when the grant was revoked once the request was processed.
	Revoked bool `json:"revoked,omitempty"`
	// Status is the HTTP status of the sandbox's answer; Error its OAuth error code.
	Status int    `json:"status"`
	Error  string `json:"error,omitempty"`
	// IssuedRefresh and IssuedAccess are the hashes of the tokens the answer carried;
	// AccessExpiresAt is when that access token expires.
	IssuedRefresh   string    `json:"issuedRefresh,omitempty"`
	IssuedAccess    string    `json:"issuedAccess,omitempty"`
	AccessExpiresAt time.Time `json:"accessExpiresAt,omitzero"`
	// Delivered is true when the real answer was written and flushed to the connection
	// while the client was still there. False means it was replaced by an injected
	// fault, the connection was dropped, or the client had gone. A proxy in between may
	// still lose a delivered answer; its own records say so.
	Delivered bool `json:"delivered"`
}

// TokenHash identifies a token in the journal without revealing it.
func TokenHash(token string) string {
	if token == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:16])
}

// journal keeps the entries. Entries are published in Seq order once their answer is
// settled, so a reader that pages with "after" never skips one that was still open.
type journal struct {
	mu      sync.Mutex
	entries []*JournalEntry
	settled []bool
}

type journalKey struct{}

// EnableJournal turns the journal on: every token request from now on is recorded, and
// GET /sandbox/journal?after=N serves the settled entries with Seq > N as a JSON array.
// Call it before serving.
func (s *Server) EnableJournal() {
	j := &journal{}
	s.journal = j
	inner := s.mux
	mux := http.NewServeMux()
	mux.Handle("/", inner)
	mux.HandleFunc("POST /connect/token", func(w http.ResponseWriter, r *http.Request) { j.track(w, r, s.handleToken) })
	mux.HandleFunc("GET "+JournalPath, s.serveJournal)
	s.mux = mux
}

// Journal returns the settled entries with Seq > after, oldest first; nil when the
// journal is off.
func (s *Server) Journal(after int64) []JournalEntry {
	if s.journal == nil {
		return nil
	}
	return s.journal.since(after)
}

func (s *Server) serveJournal(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	entries := s.Journal(after)
	if entries == nil {
		entries = []JournalEntry{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(entries)
}

// track runs the token handler with a writer that sees what happens to the answer, and
// settles the request's entry (if the handler processed it) once the handler returns.
func (j *journal) track(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
	var e *JournalEntry
	ctx := context.WithValue(r.Context(), journalKey{}, &e)
	tw := &trackingWriter{ResponseWriter: w}
	next(tw, r.WithContext(ctx))
	if e == nil {
		return
	}
	delivered := !tw.hijacked && tw.err == nil && tw.status == e.Status && r.Context().Err() == nil
	if delivered {
		// The answer is buffered until flushed: a write error shows only now.
		delivered = http.NewResponseController(w).Flush() == nil
	}
	j.settle(e, delivered)
}

// processed records a token request the sandbox has just processed. s.mu is held, so
// Seq follows the order in which refresh tokens were spent. It is a no-op when the
// journal is off.
func (j *journal) processed(s *Server, r *http.Request, grantType string, res tokenResult) {
	if j == nil {
		return
	}
	slot, _ := r.Context().Value(journalKey{}).(**JournalEntry)
	if slot == nil {
		return
	}
	e := &JournalEntry{
		Time:      s.opts.Now(),
		RequestID: r.Header.Get(RequestIDHeader),
		GrantType: grantType,
		ClientID:  res.client,
		Status:    res.status,
	}
	e.Error, _ = res.body["error"].(string)
	if grantType == "refresh_token" {
		presented := r.PostForm.Get("refresh_token")
		e.Presented = TokenHash(presented)
		if rt, ok := s.refresh[presented]; ok {
			e.Grant, e.Revoked = rt.grant.id, rt.grant.revoked
			e.Consumed = res.ok() && rt.spent // a token that is not rotated is never spent
			e.Reused = !res.ok() && rt.spent
		}
	}
	if refresh, _ := res.body["refresh_token"].(string); refresh != "" {
		e.IssuedRefresh = TokenHash(refresh)
		if rt, ok := s.refresh[refresh]; ok && e.Grant == "" {
			e.Grant = rt.grant.id
		}
	}
	if access, _ := res.body["access_token"].(string); access != "" {
		e.IssuedAccess = TokenHash(access)
		if a, ok := s.access[access]; ok {
			e.AccessExpiresAt = a.info.ExpiresAt
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	e.Seq = int64(len(j.entries) + 1)
	j.entries = append(j.entries, e)
	j.settled = append(j.settled, false)
	*slot = e
}

func (j *journal) settle(e *JournalEntry, delivered bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	e.Delivered = delivered
	j.settled[e.Seq-1] = true
}

// since returns copies of the entries after Seq after, up to the first still unsettled.
func (j *journal) since(after int64) []JournalEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := []JournalEntry{}
	for i := max(after, 0); i < int64(len(j.entries)) && j.settled[i]; i++ {
		out = append(out, *j.entries[i])
	}
	return out
}

// trackingWriter remembers the status written, the first write error, and whether the
// connection was taken over (a dropped answer).
type trackingWriter struct {
	http.ResponseWriter
	status   int
	err      error
	hijacked bool
}

func (w *trackingWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// Hijack passes the connection on (an injected fault drops it) and marks the answer
// undelivered.
func (w *trackingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
