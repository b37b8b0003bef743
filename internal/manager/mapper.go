package manager

import (
	"net/http"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// rememberingMapper is the manager's REST mapper, keeping each mapping it finds for one
// group, kind and version. The status writes go through the metadata client (their
// answer is decoded for its metadata alone), which asks the mapper on every call, and
// the dynamic mapper's priority search allocates on each: 6 % of the manager's
// allocations at ten thousand grants. A kind's mapping at one version does not change
// while the process runs; a lookup that fails is not kept.
func rememberingMapper(cfg *rest.Config, httpClient *http.Client) (meta.RESTMapper, error) {
	m, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	return &memoMapper{RESTMapper: m}, nil
}

type memoMapper struct {
	meta.RESTMapper
	mappings sync.Map // schema.GroupVersionKind → *meta.RESTMapping
}

func (m *memoMapper) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	if len(versions) != 1 {
		return m.RESTMapper.RESTMapping(gk, versions...)
	}
	gvk := gk.WithVersion(versions[0])
	if found, ok := m.mappings.Load(gvk); ok {
		return found.(*meta.RESTMapping), nil
	}
	mapping, err := m.RESTMapper.RESTMapping(gk, versions...)
	if err == nil {
		m.mappings.Store(gvk, mapping)
	}
	return mapping, err
}
