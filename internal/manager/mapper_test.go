package manager

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// countingMapper finds one kind, and counts the lookups that reach it.
type countingMapper struct {
	meta.RESTMapper
	lookups int
}

func (c *countingMapper) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	c.lookups++
	if gk.Kind != "CDUserGrant" {
		return nil, &meta.NoKindMatchError{GroupKind: gk, SearchedVersions: versions}
	}
	return &meta.RESTMapping{Resource: gk.WithVersion(versions[0]).GroupVersion().WithResource("cdusergrants"), Scope: meta.RESTScopeNamespace}, nil
}

func TestTheMapperKeepsWhatItFoundAndAsksAgainAfterAMiss(t *testing.T) {
	under := &countingMapper{}
	m := &memoMapper{RESTMapper: under}
	grant := schema.GroupKind{Group: "cd.credops.io", Kind: "CDUserGrant"}
	for range 3 {
		mapping, err := m.RESTMapping(grant, "v1alpha1")
		if err != nil || mapping.Resource.Resource != "cdusergrants" {
			t.Fatalf("RESTMapping = %v, %v", mapping, err)
		}
	}
	if under.lookups != 1 {
		t.Errorf("the mapper behind was asked %d times for one kind and version, want once", under.lookups)
	}
	missing := schema.GroupKind{Group: "cd.credops.io", Kind: "Gone"}
	for range 2 {
		if _, err := m.RESTMapping(missing, "v1alpha1"); !meta.IsNoMatchError(err) {
			t.Fatalf("a kind the server does not serve: err = %v", err)
		}
	}
	if under.lookups != 3 {
		t.Errorf("a failed lookup was kept: %d lookups, want 3", under.lookups)
	}
}
