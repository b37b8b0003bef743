package rotation

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// Mark is the in-flight mark on a refresh-token Secret (DESIGN §6.2): the token with
// hash Hash is being spent, or was, and its outcome was never recorded.
type Mark struct {
	// Hash of the token being spent; "" when there is no mark.
	Hash string
	// Holder is the process that set the mark, and Since when.
	Holder string
	Since  time.Time
	// Attempts counts presentations of the token whose answer never arrived: 1 after a
	// plain send, 2 after the one resend DESIGN §6.5 allows.
	Attempts int
	// SentTo is where the token was sent; zero for a mark an earlier version wrote.
	SentTo Destination
}

// Destination is where a refresh token is sent: a client at a token endpoint. A refresh
// token belongs to the client it was issued to (RFC 6749 §6), so a token whose answer
// was lost, and which may still be live, is only ever sent there again.
type Destination struct {
	// Hash identifies the token URL and client id (DestinationHash).
	Hash string
	// ClientID is the client's public id (OAuth client ids are not secret), and
	// Credential the CDCredential the grant named, "" when unknown: both only to say
	// where to point the grant back.
	ClientID   string
	Credential string
}

// DestinationHash identifies a client at a token endpoint, short, as marks carry it.
func DestinationHash(tokenURL, clientID string) string {
	sum := sha256.Sum256([]byte(tokenURL + "\x00" + clientID))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// ReadMark reads the mark from a refresh-token Secret's annotations.
func ReadMark(annotations map[string]string) Mark {
	m := Mark{Hash: annotations[cdv1.RotationInFlightAnnotation], Attempts: 1}
	if m.Hash == "" {
		return Mark{}
	}
	holder, since, _ := strings.Cut(annotations[cdv1.RotationHolderAnnotation], "@")
	m.Holder = holder
	m.Since, _ = time.Parse(time.RFC3339, since)
	if n, err := strconv.Atoi(annotations[cdv1.RotationAttemptAnnotation]); err == nil && n > 1 {
		m.Attempts = n
	}
	m.SentTo = readSentTo(annotations[cdv1.RotationSentToAnnotation], m.Since)
	return m
}

// readSentTo reads RotationSentToAnnotation, "<since> <hash> <credential> <client id>".
// It belongs to the mark set at since: an earlier version rewrites and clears marks
// without knowing it, and one it left behind says nothing of the mark there now.
func readSentTo(v string, since time.Time) Destination {
	parts := strings.SplitN(v, " ", 4)
	if len(parts) < 4 || since.IsZero() {
		return Destination{}
	}
	if t, err := time.Parse(time.RFC3339, parts[0]); err != nil || !t.Equal(since) {
		return Destination{}
	}
	return Destination{Hash: parts[1], Credential: parts[2], ClientID: parts[3]}
}

// WriteMark puts m on annotations, or removes the mark when m is the zero Mark.
func WriteMark(annotations map[string]string, m Mark) {
	ClearMark(annotations)
	if m.Hash == "" {
		return
	}
	annotations[cdv1.RotationInFlightAnnotation] = m.Hash
	annotations[cdv1.RotationHolderAnnotation] = m.Holder + "@" + m.Since.UTC().Format(time.RFC3339)
	if m.Attempts > 1 {
		annotations[cdv1.RotationAttemptAnnotation] = strconv.Itoa(m.Attempts)
	}
	if d := m.SentTo; d.Hash != "" {
		annotations[cdv1.RotationSentToAnnotation] = strings.Join([]string{m.Since.UTC().Format(time.RFC3339), d.Hash, d.Credential, d.ClientID}, " ")
	}
}

// ClearMark removes the in-flight mark from annotations.
func ClearMark(annotations map[string]string) {
	delete(annotations, cdv1.RotationInFlightAnnotation)
	delete(annotations, cdv1.RotationHolderAnnotation)
	delete(annotations, cdv1.RotationAttemptAnnotation)
	delete(annotations, cdv1.RotationSentToAnnotation)
}
