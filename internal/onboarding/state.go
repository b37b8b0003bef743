// Package onboarding runs the customer side of Central Dispatch's authorization-code
// flow for CDUserGrants: it builds the authorization URL a customer opens, and serves the
// callback that exchanges the code once and stores the refresh token, so the customer's
// token is never seen by a person or an app.
package onboarding

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// State is what the signed `state` parameter binds an authorization to: one grant (by
// namespace, name and UID, so a recreated grant of the same name does not match), one
// nonce (single use), and an expiry.
type State struct {
	Namespace string    `json:"ns"`
	Name      string    `json:"n"`
	UID       types.UID `json:"u"`
	Nonce     string    `json:"x"`
	Expires   int64     `json:"e"`
	// Issued is when the link was made (Unix seconds; 0 in links made before it was
	// recorded, which count as made by their expiry): a failure from a link older than a
	// recorded login does not replace it.
	Issued int64 `json:"i,omitempty"`
}

// Errors a callback's state can fail with; each gets its own page and event message.
// They are worded for the customer, who sees them on the callback's page and knows
// nothing of states, grants or status fields.
var (
	ErrStateMalformed = errors.New("This login cannot be matched to a link we sent. Open the link you were given again.")
	ErrStateForged    = errors.New("This login did not come from a link we sent, so it was not completed. Open the link you were given again.")
	ErrStateExpired   = errors.New("This link has expired. Ask for a new one.")
)

// Signer signs and checks states and derives PKCE verifiers with one HMAC key, which all
// replicas share through a Secret.
type Signer struct {
	key []byte
}

// NewSigner returns a Signer for a key of at least 32 bytes.
func NewSigner(key []byte) (*Signer, error) {
	if len(key) < 32 {
		return nil, errors.New("the state signing key must be at least 32 bytes")
	}
	return &Signer{key: key}, nil
}

// SignerFromKey returns the Signer of the operator's key, with a key derived for state
// signing alone, so signatures and the client-secret hashes never share a key.
func SignerFromKey(operatorKey []byte) (*Signer, error) {
	if len(operatorKey) < 32 {
		return nil, errors.New("the operator's key must be at least 32 bytes")
	}
	m := hmac.New(sha256.New, operatorKey)
	m.Write([]byte("authorization-state"))
	return NewSigner(m.Sum(nil))
}

// NewKey returns a fresh random signing key.
func NewKey() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

// NewState returns a state for a grant, valid for ttl from now.
func NewState(ns, name string, uid types.UID, now time.Time, ttl time.Duration) State {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return State{Namespace: ns, Name: name, UID: uid, Nonce: base64.RawURLEncoding.EncodeToString(b), Expires: now.Add(ttl).Unix(), Issued: now.Unix()}
}

// Sign encodes a state as payload.signature, both base64url.
func (s *Signer) Sign(st State) string {
	payload, _ := json.Marshal(st)
	p := base64.RawURLEncoding.EncodeToString(payload)
	return p + "." + base64.RawURLEncoding.EncodeToString(s.mac("state:"+p))
}

// Verify checks a state's signature and expiry.
func (s *Signer) Verify(raw string, now time.Time) (State, error) {
	p, sig, ok := strings.Cut(raw, ".")
	if !ok || p == "" || sig == "" {
		return State{}, ErrStateMalformed
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return State{}, ErrStateMalformed
	}
	if !hmac.Equal(got, s.mac("state:"+p)) {
		return State{}, ErrStateForged
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return State{}, ErrStateMalformed
	}
	var st State
	if err := json.Unmarshal(payload, &st); err != nil || st.Nonce == "" || st.UID == "" {
		return State{}, ErrStateMalformed
	}
	if now.Unix() >= st.Expires {
		return State{}, ErrStateExpired
	}
	return st, nil
}

// Genuine says whether raw is a state this signer made, expired or not: checking it
// costs an HMAC and no API call, so it can decide what the callback's limits count.
func (s *Signer) Genuine(raw string) bool {
	_, err := s.Verify(raw, time.Unix(0, 0))
	return err == nil
}

// Verifier derives the PKCE code verifier of a state from its nonce, so every replica can
// recompute it and it is stored nowhere, never in a URL or in status.
func (s *Signer) Verifier(st State) string {
	return base64.RawURLEncoding.EncodeToString(s.mac("pkce:" + st.Nonce))
}

// Challenge is the S256 code_challenge of a verifier.
func Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// NonceHash identifies a used nonce without revealing it.
func NonceHash(st State) string {
	sum := sha256.Sum256([]byte("nonce:" + st.Nonce))
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

func (s *Signer) mac(msg string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// ExpiresAt returns a signed state's expiry without checking the signature (to decide
// when to refresh the URL in status).
func ExpiresAt(raw string) time.Time {
	p, _, _ := strings.Cut(raw, ".")
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return time.Time{}
	}
	var st State
	if json.Unmarshal(payload, &st) != nil {
		return time.Time{}
	}
	return time.Unix(st.Expires, 0)
}
