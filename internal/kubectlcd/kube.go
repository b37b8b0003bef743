package kubectlcd

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// The resources the plugin reads. Dynamic (unstructured) access keeps every status
// field the server sends, including ones newer than this plugin, for -o yaml|json.
var (
	credentialsResource = cdv1.GroupVersion.WithResource("cdcredentials")
	grantsResource      = cdv1.GroupVersion.WithResource("cdusergrants")
	secretsResource     = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	eventsResource      = schema.GroupVersionResource{Version: "v1", Resource: "events"}
)

// Kinds as the API names them.
const (
	credentialKind = "CDCredential"
	grantKind      = "CDUserGrant"
)

// kube is a connection to the cluster of the selected kubeconfig context.
type kube struct {
	config    *rest.Config
	dynamic   dynamic.Interface
	metadata  metadata.Interface
	namespace string // from -n or the context
}

// connect builds clients from the standard kubectl flags.
func (o *options) connect() (*kube, error) {
	cfg, err := o.config.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	ns, _, err := o.config.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &kube{config: cfg, dynamic: dyn, metadata: meta, namespace: ns}, nil
}

// grants is the CDUserGrants of one namespace ("" for all).
func (k *kube) grants(ns string) dynamic.ResourceInterface {
	return k.dynamic.Resource(grantsResource).Namespace(ns)
}

// credentials is the CDCredentials of one namespace ("" for all).
func (k *kube) credentials(ns string) dynamic.ResourceInterface {
	return k.dynamic.Resource(credentialsResource).Namespace(ns)
}

// getGrant reads one CDUserGrant, with an error a person can act on.
func (k *kube) getGrant(ctx context.Context, name string) (*unstructured.Unstructured, error) {
	u, err := k.grants(k.namespace).Get(ctx, name, metav1.GetOptions{})
	// A cluster without the CRDs answers NotFound too; that must name the missing API,
	// as `status` does, not send the person looking for a grant that cannot exist.
	if apierrors.IsNotFound(err) && !isMissingCRD(err) {
		return nil, fmt.Errorf("CDUserGrant %q not found in namespace %q", name, k.namespace)
	}
	if err != nil {
		return nil, explainAPIError(err, "reading CDUserGrant "+name)
	}
	return u, nil
}

// explainAPIError says what was being done; the API server's message already names
// the object and, for a forbidden request, the user.
func explainAPIError(err error, doing string) error {
	if apierrors.IsNotFound(err) && isMissingCRD(err) {
		return fmt.Errorf("%s: the cd.credops.io API is not installed in this cluster (is cd-credentials-operator installed?)", doing)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// isMissingCRD tells a missing resource type from a missing object: for a type the
// server does not serve, client-go turns the bare 404 into a generic NotFound.
func isMissingCRD(err error) bool {
	return apierrors.IsNotFound(err) && strings.Contains(err.Error(), "the server could not find the requested resource")
}
