package freeport

import (
	"net"
	"testing"
)

// A port closed a moment ago is the one the kernel is most likely to offer next; the
// manager's three endpoints were once given the same port that way. Every address is
// different from every other, however many are asked for in a row.
func TestNoAddressIsHandedOutTwice(t *testing.T) {
	seen := map[string]bool{}
	for range 500 {
		addr, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
	}
}

// The address is free: a server can listen on it.
func TestTheAddressCanBeListenedOn(t *testing.T) {
	addr, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
}
