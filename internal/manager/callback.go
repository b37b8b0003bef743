package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/onboarding"
)

// callbackKeyKey is the data key of the state-signing key in its Secret.
const callbackKeyKey = "hmac-key"

// loadOrCreateSigner reads the state-signing key shared by all replicas from its Secret,
// creating it on first start. Two replicas starting at once both try to create it; the
// loser reads the winner's.
func loadOrCreateSigner(ctx context.Context, cfg *rest.Config, key types.NamespacedName) (*onboarding.Signer, error) {
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, err
	}
	s := &corev1.Secret{}
	err = c.Get(ctx, key, s)
	if apierrors.IsNotFound(err) {
		s = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{cdv1.ManagedByLabel: cdv1.ManagedByValue}},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{callbackKeyKey: onboarding.NewKey()},
		}
		err = c.Create(ctx, s)
		if apierrors.IsAlreadyExists(err) {
			err = c.Get(ctx, key, s)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading or creating the callback state key Secret %s: %w", key, err)
	}
	return onboarding.NewSigner(s.Data[callbackKeyKey])
}

// callbackServer serves the onboarding callback on its own listener. Every replica
// serves it (it needs no leader), and it stops with the manager.
type callbackServer struct {
	addr    string
	certDir string
	handler http.Handler
}

func (s *callbackServer) NeedLeaderElection() bool { return false }

func (s *callbackServer) Start(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("/callback", s.handler)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second}
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("callback server: %w", err)
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	ctrl.Log.WithName("callback").Info("Serving the authorization callback", "address", l.Addr().String(), "tls", s.certDir != "")
	if s.certDir != "" {
		err = srv.ServeTLS(l, filepath.Join(s.certDir, "tls.crt"), filepath.Join(s.certDir, "tls.key"))
	} else {
		err = srv.Serve(l)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
