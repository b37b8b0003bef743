// Package statuspatch builds the JSON patch every status write of the operator sends:
// the fields of a status that changed, applied only to the object they were computed
// for (its UID is tested first), so that an object deleted and created again under its
// name meanwhile never gets another's status.
package statuspatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Patch is a JSON patch (RFC 6902) of an object's status alone, from its status
// before and after a pass, that applies to the object the pass read and no other: its
// first operation tests metadata.uid. The pass's status is written when the pass ends,
// after a token request that may take seconds, and by then the object may have been
// deleted and created again under its name (kubectl replace --force, a GitOps tool's
// replace): a patch by name alone would give the new object a status it never had
// (Ready, a token's times, a failure memory). A merge patch carrying metadata.uid does
// not do it: the status subresource of a custom resource takes the status alone and
// drops the rest, uid included (kube-apiserver 1.37 applies such a patch to another UID).
// A failed test is refused as Invalid.
//
// client.MergeFrom marshals and diffs the whole object, metadata and spec included, on
// every status write, though the status subresource takes the status only: on a
// rotation that was a tenth of the manager's CPU. So only the fields that changed go,
// each set whole (a field that went is set to null, which the API server prunes).
type Patch[S any] struct {
	uid           types.UID
	before, after *S
	// Over, when set, is the resourceVersion of an object the pass read without a
	// status: the patch then sets the status whole, which needs none there (a JSON
	// patch cannot add a field to a status that is absent), and only at that version,
	// so that a status written meanwhile is not replaced. For sets it when the object
	// was read without a status; a writer that finds the object otherwise than it read
	// it changes it before sending the patch again.
	Over string
}

// For returns the status patch from before to after for obj, as read with status
// before.
func For[S any](obj client.Object, before, after *S) Patch[S] {
	p := Patch[S]{uid: obj.GetUID(), before: before, after: after}
	if reflect.ValueOf(before).Elem().IsZero() {
		p.Over = obj.GetResourceVersion()
	}
	return p
}

func (Patch[S]) Type() types.PatchType { return types.JSONPatchType }

// patchOp is one operation of a JSON patch.
type patchOp struct {
	op, path string
	value    json.RawMessage
}

func (p Patch[S]) Data(client.Object) ([]byte, error) {
	ops := []patchOp{{op: "test", path: "/metadata/uid", value: stringOrNull(string(p.uid))}}
	if p.Over != "" {
		whole, err := json.Marshal(p.after)
		if err != nil {
			return nil, err
		}
		ops = append(ops,
			patchOp{op: "test", path: "/metadata/resourceVersion", value: stringOrNull(p.Over)},
			patchOp{op: "add", path: "/status", value: whole})
		return encodeOps(ops), nil
	}
	fields, err := fieldOps(reflect.ValueOf(p.before).Elem(), reflect.ValueOf(p.after).Elem())
	if err != nil {
		return nil, err
	}
	return encodeOps(append(ops, fields...)), nil
}

// encodeOps is ops as a JSON patch. Each value is JSON already, and ops and paths need
// no escaping (fieldOps refuses a field name that would): json.Marshal would only check
// and compact every value again.
func encodeOps(ops []patchOp) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, o := range ops {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"op":"` + o.op + `","path":"` + o.path + `","value":`)
		b.Write(o.value)
		b.WriteByte('}')
	}
	b.WriteByte(']')
	return b.Bytes()
}

// stringOrNull is s as a JSON value, null when empty: a test of a field an object
// lacks (one a test built without a uid).
func stringOrNull(s string) json.RawMessage {
	if s == "" {
		return json.RawMessage("null")
	}
	raw, _ := json.Marshal(s)
	return raw
}

// fieldOps are the operations that set the top-level JSON fields of after, a status,
// that differ from before, a struct of the same type. A rotation changes a handful of
// scalar fields: only the fields that differ are encoded (marshalling both statuses
// whole and decoding them again by field was 2.7 % of the manager's CPU). A field that
// went is set to null: unlike remove, that applies whether the object still has it or not.
func fieldOps(before, after reflect.Value) ([]patchOp, error) {
	var ops []patchOp
	t := before.Type()
	for i := range t.NumField() {
		name, omitEmpty, err := jsonName(t.Field(i))
		if err != nil {
			return nil, err
		}
		b, a := before.Field(i), after.Field(i)
		if name == "" || reflect.DeepEqual(b.Interface(), a.Interface()) {
			continue
		}
		if strings.ContainsAny(name, `~/"\`) {
			return nil, fmt.Errorf("status field %s: its JSON name %q needs escaping in a JSON patch", t.Field(i).Name, name)
		}
		path := "/status/" + name
		inBefore, inAfter := !omitEmpty || !isEmpty(b), !omitEmpty || !isEmpty(a)
		if !inAfter {
			if inBefore {
				ops = append(ops, patchOp{op: "add", path: path, value: json.RawMessage("null")})
			}
			continue
		}
		raw, err := json.Marshal(a.Interface())
		if err != nil {
			return nil, err
		}
		if inBefore {
			old, err := json.Marshal(b.Interface())
			if err != nil {
				return nil, err
			}
			if bytes.Equal(old, raw) {
				continue // equal as sent: a time moved within its second
			}
		}
		ops = append(ops, patchOp{op: "add", path: path, value: raw})
	}
	return ops, nil
}

// jsonName is the name encoding/json gives a struct field ("" for one it leaves out) and
// whether it leaves the field out when empty. A status embeds no struct and marks no
// field omitzero; either is refused rather than encoded differently from encoding/json.
func jsonName(f reflect.StructField) (name string, omitEmpty bool, err error) {
	tag := f.Tag.Get("json")
	name, opts, _ := strings.Cut(tag, ",")
	var omitZero bool
	for o := range strings.SplitSeq(opts, ",") {
		omitEmpty = omitEmpty || o == "omitempty"
		omitZero = omitZero || o == "omitzero"
	}
	switch {
	case tag == "-":
		return "", false, nil
	case f.Anonymous || omitZero:
		return "", false, fmt.Errorf("status field %s: embedded or omitzero fields are not supported", f.Name)
	case !f.IsExported():
		return "", false, nil
	}
	if name == "" {
		name = f.Name
	}
	return name, omitEmpty, nil
}

// isEmpty is encoding/json's test for omitempty.
func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}
