package plugin

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// KUBECTL_EXTERNAL_DIFF names a program and its options, as kubectl reads it: an argument with
// anything but letters, digits, '-' and '=' is dropped, so the variable cannot smuggle a command.
func TestExternalDiffCommandFiltersArgumentsLikeKubectl(t *testing.T) {
	for env, want := range map[string][]string{
		"diff":                       {"diff"},
		"diff -u -N --color=always":  {"diff", "-u", "-N", "--color=always"},
		"colordiff -y -W=200":        {"colordiff", "-y", "-W=200"},
		"sh -c touch${IFS}pwned":     {"sh", "-c"},
		"meld --label=a;rm --diff":   {"meld", "--diff"},
		"dyff between --omit-header": {"dyff", "between", "--omit-header"},
	} {
		program, args := externalDiffCommand(env)
		assert.Equal(t, want, append([]string{program}, args...), env)
	}
}
