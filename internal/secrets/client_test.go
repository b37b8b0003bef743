package secrets

import (
	"strings"
	"testing"
)

// TestAKeyedHashNamesItsKey: a hash says under which key it was taken, so a hash written
// by another install (another key) is told from a new client secret; the key id reveals
// nothing of the key.
func TestAKeyedHashNamesItsKey(t *testing.T) {
	one, two := []byte("install-one-key-0123456789abcdef-1"), []byte("install-two-key-0123456789abcdef-2")
	h := KeyedHash(one, "s3cret")
	if h != KeyedHash(one, "s3cret") || h == KeyedHash(one, "s3cret-2") || h == KeyedHash(two, "s3cret") {
		t.Errorf("KeyedHash is not a function of key and secret alone: %s", h)
	}
	if id := KeyID(one); len(id) != 8 || id == KeyID(two) || strings.Contains(string(one), id) {
		t.Errorf("KeyID %q", id)
	}
	if !strings.HasPrefix(h, "hmac-sha256:"+KeyID(one)+":") || len(h) != len("hmac-sha256:")+8+1+32 {
		t.Errorf("KeyedHash %q, want hmac-sha256:<key id>:<32 hex>", h)
	}
	for hash, want := range map[string]string{h: KeyID(one), KeyedHash(two, "s3cret"): KeyID(two)} {
		if id, ok := HashKeyID(hash); !ok || id != want {
			t.Errorf("HashKeyID(%q) = %q, %v; want %q", hash, id, ok, want)
		}
	}
	for _, hash := range []string{"", "hmac-sha256:0123456789abcdef0123456789abcdef", "sha256:ab:cd"} {
		if id, ok := HashKeyID(hash); ok {
			t.Errorf("HashKeyID(%q) = %q: it names no key", hash, id)
		}
	}
}
