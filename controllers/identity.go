package controllers

import (
	"crypto/rand"
	"encoding/hex"
	"os"

	"github.com/golang-jwt/jwt/v5"
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
