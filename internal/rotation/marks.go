package rotation

import (
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
	return m
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
}

// ClearMark removes the in-flight mark from annotations.
func ClearMark(annotations map[string]string) {
	delete(annotations, cdv1.RotationInFlightAnnotation)
	delete(annotations, cdv1.RotationHolderAnnotation)
	delete(annotations, cdv1.RotationAttemptAnnotation)
}
