package integration

import (
	"context"
	"errors"
	"sync"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// errInjected is what a faulty client answers while a fault holds.
var errInjected = errors.New("injected API server failure")

// faultyClient wraps the manager's client so a test can make writes fail: an API
// server outage, or (failing every write for good) a process that died.
type faultyClient struct {
	client.Client
	mu sync.Mutex
	// fail decides, per write, whether it fails. nil lets everything through.
	fail func(verb string, obj client.Object) bool
}

func (f *faultyClient) setFault(fn func(verb string, obj client.Object) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

func (f *faultyClient) check(verb string, obj client.Object) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil && f.fail(verb, obj) {
		return errInjected
	}
	return nil
}

// newClientFunc is the manager option that installs f as the manager's client.
func (f *faultyClient) newClientFunc() client.NewClientFunc {
	return func(config *rest.Config, options client.Options) (client.Client, error) {
		c, err := client.New(config, options)
		f.Client = c
		return f, err
	}
}

func (f *faultyClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if err := f.check("create", obj); err != nil {
		return err
	}
	return f.Client.Create(ctx, obj, opts...)
}

func (f *faultyClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	if err := f.check("update", obj); err != nil {
		return err
	}
	return f.Client.Update(ctx, obj, opts...)
}

func (f *faultyClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if err := f.check("patch", obj); err != nil {
		return err
	}
	return f.Client.Patch(ctx, obj, patch, opts...)
}

func (f *faultyClient) Status() client.SubResourceWriter {
	return faultyStatus{SubResourceWriter: f.Client.Status(), f: f}
}

type faultyStatus struct {
	client.SubResourceWriter
	f *faultyClient
}

func (s faultyStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	if err := s.f.check("status", obj); err != nil {
		return err
	}
	return s.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

func (s faultyStatus) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	if err := s.f.check("status", obj); err != nil {
		return err
	}
	return s.SubResourceWriter.Update(ctx, obj, opts...)
}
