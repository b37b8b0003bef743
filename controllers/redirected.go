package controllers

import (
	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// redirected: the stored refresh token got no answer from the client it was sent to,
// and the grant now names another (rotation.Redirected). Nothing was sent.
type redirected struct{ sentTo rotation.Destination }

func (redirected) isOutcome() {}

// message says where the pending rotation belongs and the two ways out. The failure
// memory stays as the lost send left it: pointed back, the resend still waits for the
// last safe point.
func (o redirected) message() string {
	back := "CDCredential " + o.sentTo.Credential
	if o.sentTo.Credential == "" {
		back = "a CDCredential of client " + o.sentTo.ClientID
	}
	return "A rotation interrupted at client " + o.sentTo.ClientID + " is pending: point spec.credentialRef back at " + back +
		", or have the customer log in again. Its refresh token got no answer there and may still be live; it belongs to that client, so it is not sent to another. Nothing was sent"
}

// destination is where a grant's refresh token goes through cred's client c.
func destination(cred *cdv1.CDCredential, c secrets.Client) rotation.Destination {
	return rotation.Destination{
		Hash:     rotation.DestinationHash(c.Endpoint.TokenURL, c.Endpoint.ClientID),
		ClientID: c.Endpoint.ClientID, Credential: cred.Name,
	}
}
