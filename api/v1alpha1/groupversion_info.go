// Package v1alpha1 holds the cd.credops.io/v1alpha1 API: CDCredential, one Central
// Dispatch API client, and CDUserGrant, one Central Dispatch customer's login.
//
// +kubebuilder:object:generate=true
// +groupName=cd.credops.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "cd.credops.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
