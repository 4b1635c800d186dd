package fluxinstance

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Decode parses one FluxInstance from YAML or JSON. Decoding is strict: unknown
// or misspelt fields, duplicate keys, wrong types, a wrong apiVersion or kind and
// more than one document are errors that name the field path and source (a
// file name or "-" for stdin, used only in messages). Unknown fields under
// status are ignored because the operator owns status and newer operators may
// report more than these types know.
func Decode(data []byte, source string) (*FluxInstance, error) {
	if source == "" {
		source = "<input>"
	}
	doc, err := singleDocument(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	jsonData, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid YAML: %w", source, err)
	}
	if bytes.Equal(bytes.TrimSpace(jsonData), []byte("null")) {
		return nil, fmt.Errorf("%s: no FluxInstance found: the document is empty", source)
	}
	if len(jsonData) == 0 || jsonData[0] != '{' {
		return nil, fmt.Errorf("%s: expected a FluxInstance object, found %s", source, describeJSON(jsonData))
	}

	// Check the type first so that a Deployment is reported as such, not as a
	// list of unknown fields.
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(jsonData, &tm); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if tm.Kind != Kind || tm.APIVersion != APIVersion {
		return nil, fmt.Errorf("%s: expected apiVersion %q and kind %q, found apiVersion %q and kind %q",
			source, APIVersion, Kind, tm.APIVersion, tm.Kind)
	}

	inst := &FluxInstance{}
	strictErrs, err := sigsjson.UnmarshalStrict(jsonData, inst, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, cleanJSONError(err))
	}
	var errs []error
	for _, e := range strictErrs {
		if fe, ok := e.(sigsjson.FieldError); ok && strings.HasPrefix(fe.FieldPath(), "status.") {
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %w", source, e))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return inst, nil
}

// singleDocument returns the only non-empty YAML document of data.
func singleDocument(data []byte) ([]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var found []byte
	n := 0
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading YAML: %w", err)
		}
		if isEmptyDoc(doc) {
			continue
		}
		n++
		if n > 1 {
			return nil, fmt.Errorf("expected exactly one FluxInstance, found more than one YAML document")
		}
		found = doc
	}
	if n == 0 {
		return nil, fmt.Errorf("no FluxInstance found: the input is empty")
	}
	return found, nil
}

func isEmptyDoc(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		l := bytes.TrimSpace(line)
		if len(l) == 0 || l[0] == '#' || bytes.Equal(l, []byte("---")) {
			continue
		}
		return false
	}
	return true
}

func describeJSON(j []byte) string {
	switch {
	case len(j) == 0:
		return "nothing"
	case j[0] == '[':
		return "a list"
	case j[0] == '"':
		return "a string"
	default:
		return "a scalar value"
	}
}

// cleanJSONError drops the Go type names from encoding errors so that users see
// the field path, e.g. `spec.cluster.multitenant: cannot unmarshal string into bool`.
func cleanJSONError(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "json: ")
	// "cannot unmarshal X into Go struct field T.path.to.field of type Y"
	const marker = " into Go struct field "
	if i := strings.Index(msg, marker); i >= 0 {
		rest := msg[i+len(marker):]
		typ := ""
		if j := strings.LastIndex(rest, " of type "); j >= 0 {
			typ = rest[j+len(" of type "):]
			rest = rest[:j]
		}
		// Drop the Go type name before the first dot.
		if k := strings.Index(rest, "."); k >= 0 {
			rest = rest[k+1:]
		}
		return fmt.Errorf("field %s: %s into %s", rest, msg[:i], typ)
	}
	return errors.New(msg)
}
