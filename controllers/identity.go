package controllers

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// holderID names this process in in-flight marks: the host name, plus a random part so
// a restarted process on the same host does not take a dead one's mark for its own.
var holderID = func() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}()

// jwtSubject returns the `sub` claim of a JWT access token, or "" when the token is not
// a JWT. The signature is not checked: the subject is shown in status, never trusted.
func jwtSubject(accessToken string) string {
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(accessToken, claims); err != nil {
		return ""
	}
	sub, _ := claims.GetSubject()
	if len(sub) > 256 {
		return ""
	}
	return sub
}

// credentialRequest identifies a CDCredential's client-credentials request
// (rotation.Request): its spec half is everything the CDCredential decides that is sent
// or read, its secret half what its client Secret holds.
func credentialRequest(cred *cdv1.CDCredential, c secrets.Client) string {
	spec := append([]string{string(cred.UID)}, clientSpec(cred, c)...)
	spec = append(spec, strings.Join(c.Endpoint.Scopes, " "))
	return rotation.Request(spec, []string{c.Endpoint.ClientID, c.SecretHash})
}

// grantRequest identifies a CDUserGrant's refresh (rotation.Request) as
// credentialRequest does, with the grant's references in the spec half and the refresh
// token's hash in the secret half. A refresh sends no scope.
func grantRequest(grant *cdv1.CDUserGrant, cred *cdv1.CDCredential, c secrets.Client, refreshHash string) string {
	ref := grant.Spec.RefreshTokenSecretRef
	spec := append([]string{string(grant.UID), grant.Spec.CredentialRef.Name, ref.Name, secrets.RefreshKey(grant)}, clientSpec(cred, c)...)
	return rotation.Request(spec, []string{c.Endpoint.ClientID, c.SecretHash, refreshHash})
}

// clientSpec is what a CDCredential's spec says of its client: the endpoint, the auth
// method, the client id when the spec holds it, and where the client Secret is read.
func clientSpec(cred *cdv1.CDCredential, c secrets.Client) []string {
	ref := cred.Spec.ClientSecretRef
	return []string{c.Endpoint.TokenURL, string(c.Endpoint.AuthMethod), cred.Spec.ClientID, ref.Name, ref.ClientIDKey, ref.ClientSecretKey}
}
