package install

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

// pod is a destination of the manager's traffic, as a NetworkPolicy sees it: the pod's
// namespace, its labels, and the port it listens on (a Service's DNAT has already
// turned the Service port into the pod's).
type pod struct {
	namespace string
	labels    map[string]string
	port      int32
	protocol  corev1.Protocol
}

// egressAllows says whether np lets its pods open a connection to dst. Only pod peers
// are evaluated (namespaceSelector and podSelector); an ipBlock never matches, since
// the chart's ipBlocks name the token hosts and the API server, not cluster DNS.
func egressAllows(t *testing.T, np networkingv1.NetworkPolicy, dst pod) bool {
	t.Helper()
	selects := func(sel *metav1.LabelSelector, set map[string]string) bool {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatalf("selector %v: %v", sel, err)
		}
		return s.Matches(labels.Set(set))
	}
	nsLabels := map[string]string{"kubernetes.io/metadata.name": dst.namespace}
	for _, r := range np.Spec.Egress {
		portOK := len(r.Ports) == 0
		for _, p := range r.Ports {
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if proto != dst.protocol {
				continue
			}
			if p.Port == nil {
				portOK = true
				continue
			}
			end := p.Port.IntVal
			if p.EndPort != nil {
				end = *p.EndPort
			}
			if p.Port.IntVal <= dst.port && dst.port <= end {
				portOK = true
			}
		}
		if !portOK {
			continue
		}
		if len(r.To) == 0 {
			return true
		}
		for _, peer := range r.To {
			if peer.IPBlock != nil {
				continue
			}
			nsOK := dst.namespace == np.Namespace
			if peer.NamespaceSelector != nil {
				nsOK = selects(peer.NamespaceSelector, nsLabels)
			}
			podOK := peer.PodSelector == nil || selects(peer.PodSelector, dst.labels)
			if nsOK && podOK {
				return true
			}
		}
	}
	return false
}

// TestTheNetworkPolicyLetsTheManagerResolveNamesOnOpenShift: the manager resolves its
// token hosts through cluster DNS. On OpenShift that is CoreDNS in openshift-dns, pods
// labelled dns.operator.openshift.io/daemonset-dns=default, listening on 5353 behind
// the dns-default Service's 53; a NetworkPolicy judges the pod's port. With the
// NetworkPolicy on and its default DNS rule (kube-system's kube-dns on 53), every
// lookup on OpenShift was dropped and every token request failed.
func TestTheNetworkPolicyLetsTheManagerResolveNamesOnOpenShift(t *testing.T) {
	nps := only(objects(t, run(t, helm(t), "template", "cd", chartDir, "--namespace", "cd-system",
		"--set", "networkPolicy.enabled=true")), "NetworkPolicy")
	if len(nps) != 1 {
		t.Fatalf("%d NetworkPolicies, want 1", len(nps))
	}
	var np networkingv1.NetworkPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(nps[0].Object, &np); err != nil {
		t.Fatal(err)
	}
	kubeDNS := map[string]string{"k8s-app": "kube-dns"}
	openshiftDNS := map[string]string{"dns.operator.openshift.io/daemonset-dns": "default"}
	for _, tc := range []struct {
		name string
		dst  pod
		want bool
	}{
		{"kube-dns over UDP", pod{"kube-system", kubeDNS, 53, corev1.ProtocolUDP}, true},
		{"kube-dns over TCP", pod{"kube-system", kubeDNS, 53, corev1.ProtocolTCP}, true},
		{"OpenShift's DNS over UDP", pod{"openshift-dns", openshiftDNS, 5353, corev1.ProtocolUDP}, true},
		{"OpenShift's DNS over TCP", pod{"openshift-dns", openshiftDNS, 5353, corev1.ProtocolTCP}, true},
		{"another pod of openshift-dns", pod{"openshift-dns", map[string]string{"app": "other"}, 5353, corev1.ProtocolUDP}, false},
		{"a pod of another namespace on the DNS port", pod{"team-a", openshiftDNS, 5353, corev1.ProtocolUDP}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := egressAllows(t, np, tc.dst); got != tc.want {
				t.Errorf("egress to %s/%v port %d/%s allowed: %v, want %v", tc.dst.namespace, tc.dst.labels, tc.dst.port, tc.dst.protocol, got, tc.want)
			}
		})
	}
}
