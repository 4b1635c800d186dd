package plugin

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// printStructured prints v for -o json (indented like kubectl) or -o yaml. ok is false for any
// other format: the caller then prints its human-readable form.
func printStructured(out io.Writer, format string, v any) (ok bool, err error) {
	var data []byte
	switch format {
	case "json":
		if data, err = json.MarshalIndent(v, "", "  "); err == nil {
			_, err = fmt.Fprintln(out, string(data))
		}
	case "yaml":
		if data, err = yaml.Marshal(v); err == nil {
			_, err = out.Write(data)
		}
	default:
		return false, nil
	}
	return true, err
}
