package render

import (
	"bytes"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

// parseManifests decodes a multi-document YAML file of the distribution into
// objects. Numbers become int64/float64 as in unstructured.Unstructured.
func parseManifests(name string, data []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for i, doc := range splitYAMLDocuments(data) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("distribution file %s, document %d: %w", name, i+1, err)
		}
		if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
			continue
		}
		obj := map[string]interface{}{}
		if err := utiljson.Unmarshal(j, &obj); err != nil {
			return nil, fmt.Errorf("distribution file %s, document %d: %w", name, i+1, err)
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("distribution file %s, document %d: object without kind or metadata.name", name, i+1)
		}
		out = append(out, u)
	}
	return out, nil
}

// splitYAMLDocuments splits on lines that are exactly "---" (optionally
// followed by spaces or a comment), the separator the distribution uses.
func splitYAMLDocuments(data []byte) [][]byte {
	var docs [][]byte
	start := 0
	for i := 0; i < len(data); {
		end := bytes.IndexByte(data[i:], '\n')
		lineEnd := len(data)
		next := len(data)
		if end >= 0 {
			lineEnd = i + end
			next = lineEnd + 1
		}
		line := bytes.TrimRight(data[i:lineEnd], " \t\r")
		if bytes.HasPrefix(line, []byte("---")) && (len(line) == 3 || line[3] == ' ' || line[3] == '#') {
			docs = append(docs, data[start:i])
			start = next
		}
		i = next
	}
	docs = append(docs, data[start:])
	return docs
}
