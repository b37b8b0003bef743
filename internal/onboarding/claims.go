package onboarding

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// claimMargin is how long past its expiry a claimed state is still remembered: another
// replica whose clock runs behind may still take the state for valid that long.
const claimMargin = time.Minute

// claims are the states whose codes were exchanged and that have not expired yet, as
// kept in UsedStateAnnotation: "hash@expiry" entries (expiry in Unix seconds) separated
// by spaces. Only the latest would not do: once a newer link is claimed, an older one
// still within its lifetime could be claimed again and its code sent a second time, and
// an identity server that sees a code twice may revoke everything issued from it (RFC
// 6749 §4.1.2). Each entry is a real login through the identity server, so the list
// holds only the logins of one link lifetime.
type claims map[string]int64

// readClaims parses the annotation. A bare hash, as written before expiries were kept,
// has no expiry; it is kept until the next claim's (see add).
func readClaims(v string) claims {
	c := claims{}
	for _, e := range strings.Fields(v) {
		hash, exp, _ := strings.Cut(e, "@")
		n, _ := strconv.ParseInt(exp, 10, 64)
		c[hash] = n
	}
	return c
}

// claimed tells whether st was claimed on a grant whose annotations are given.
func claimed(annotations map[string]string, st State) bool {
	_, ok := readClaims(annotations[UsedStateAnnotation])[NonceHash(st)]
	return ok
}

// add claims st and forgets the states that expired more than claimMargin before now:
// Verify refuses them anyway. A bare hash of the old format takes st's expiry: it was
// claimed earlier, so issued earlier, with the same link lifetime.
func (c claims) add(st State, now time.Time) {
	for hash, exp := range c {
		switch {
		case exp == 0:
			c[hash] = st.Expires
		case now.Unix() >= exp+int64(claimMargin/time.Second):
			delete(c, hash)
		}
	}
	c[NonceHash(st)] = st.Expires
}

// String is the annotation's value, oldest expiry first.
func (c claims) String() string {
	entries := make([]string, 0, len(c))
	for hash, exp := range c {
		entries = append(entries, hash+"@"+strconv.FormatInt(exp, 10))
	}
	slices.SortFunc(entries, func(a, b string) int {
		return cmp.Or(cmp.Compare(expiryOf(a), expiryOf(b)), strings.Compare(a, b))
	})
	return strings.Join(entries, " ")
}

func expiryOf(entry string) int64 {
	_, exp, _ := strings.Cut(entry, "@")
	n, _ := strconv.ParseInt(exp, 10, 64)
	return n
}
