package secrets

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// InvalidError says a referenced Secret is opted in but its content cannot be used. The
// message names keys, never values.
type InvalidError struct{ msg string }

func (e *InvalidError) Error() string { return e.msg }

// Client is a CDCredential's client, ready to ask for tokens.
type Client struct {
	Endpoint tokenclient.Endpoint
	// Fingerprint identifies what a token is requested for (endpoint, client id, auth
	// method, scopes): a token in an output Secret with another fingerprint was issued
	// for another request and is replaced at once.
	Fingerprint string
	// SecretHash identifies the client secret (unkeyed: for request identities only,
	// never shown).
	SecretHash string
}

// ReadClient reads a CDCredential's opted-in client Secret and returns its client.
// Errors: NotFound from the API, *NotOptedInError, *InvalidError.
func (r Readers) ReadClient(ctx context.Context, cred *cdv1.CDCredential) (Client, error) {
	ref := cred.Spec.ClientSecretRef
	s, err := r.Get(ctx, types.NamespacedName{Namespace: cred.Namespace, Name: ref.Name}, cdv1.SecretTypeClient)
	if err != nil {
		return Client{}, err
	}
	secretKey := defaultString(ref.ClientSecretKey, "client_secret")
	secret, secErr := Value(s, secretKey)
	id, idErr := cred.Spec.ClientID, error(nil)
	if id == "" {
		idKey := defaultString(ref.ClientIDKey, "client_id")
		id, idErr = Value(s, idKey)
		// The client id is published (status.clientID, every login link, the messages
		// naming a client shared across flows); a client secret read as one would be
		// shown to whoever can read the CR. The CRD refuses equal keys; this also
		// catches the same value under two keys, and a CR admitted before that rule.
		if idErr == nil && secErr == nil && (idKey == secretKey || id == secret) {
			idErr = errors.New("key " + idKey + " holds the client secret, not a client id: the client id is published in status and in login links, so name the key that holds the client id (clientIDKey) or set spec.clientID")
		}
	}
	if err := errors.Join(idErr, secErr); err != nil {
		return Client{}, &InvalidError{msg: "Client Secret " + ref.Name + ": " + strings.ReplaceAll(err.Error(), "\n", "; ")}
	}
	ep := tokenclient.Endpoint{
		TokenURL:     TokenURL(cred),
		AuthMethod:   authMethod(cred.Spec.ClientAuthMethod),
		ClientID:     id,
		ClientSecret: secret,
		Scopes:       cred.Spec.Scopes,
	}
	return Client{
		Endpoint:    ep,
		Fingerprint: fingerprint(ep.TokenURL, ep.ClientID, string(ep.AuthMethod), strings.Join(ep.Scopes, " ")),
		SecretHash:  fingerprint(secret),
	}, nil
}

// Issuer is a credential's issuer URL, defaulted.
func Issuer(cred *cdv1.CDCredential) string {
	return defaultString(cred.Spec.Issuer, cdv1.DefaultIssuer)
}

// TokenURL is where a credential's client asks for tokens.
func TokenURL(cred *cdv1.CDCredential) string {
	if cred.Spec.TokenURL != "" {
		return cred.Spec.TokenURL
	}
	return strings.TrimRight(Issuer(cred), "/") + "/connect/token"
}

func authMethod(m cdv1.ClientAuthMethod) tokenclient.AuthMethod {
	if m == cdv1.ClientSecretBasic {
		return tokenclient.ClientSecretBasic
	}
	return tokenclient.ClientSecretPost
}

// KeyedHash is HMAC-SHA256 of a client secret under the operator's key, named by the
// key's id: "hmac-sha256:<key id>:<hex>". Equal for equal secrets under one key, so one
// client used for both flows is found across namespaces, and of no use to anyone who can
// read CR status but not the key. The key id tells a hash written by another install
// (another key Secret) from a change of the client secret: the two cannot be compared.
func KeyedHash(key []byte, secret string) string {
	return hashPrefix + KeyID(key) + ":" + hex.EncodeToString(mac(key, "client-secret\x00"+secret)[:16])
}

// KeyID names a key in KeyedHash: 4 bytes of an HMAC of a fixed label under the key, so
// it tells keys apart and reveals nothing about the key.
func KeyID(key []byte) string {
	return hex.EncodeToString(mac(key, "key-id")[:4])
}

// HashKeyID is the key id a KeyedHash names; false for an empty hash and for one of the
// earlier format "hmac-sha256:<hex>", which named no key.
func HashKeyID(hash string) (string, bool) {
	rest, ok := strings.CutPrefix(hash, hashPrefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, ":")
	return id, ok
}

const hashPrefix = "hmac-sha256:"

func mac(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func fingerprint(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:8])
}

func defaultString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
