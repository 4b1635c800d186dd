package fleet

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// UnknownContextError names the contexts asked for that the kubeconfig does not have, and the
// ones it has, so a typo is fixed without opening the file.
type UnknownContextError struct {
	Unknown []string
	Known   []string
}

func (e *UnknownContextError) Error() string {
	known := "none"
	if len(e.Known) > 0 {
		known = strings.Join(e.Known, ", ")
	}
	return fmt.Sprintf("the kubeconfig has no context named %s; its contexts are: %s", strings.Join(quote(e.Unknown), ", "), known)
}

func quote(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fmt.Sprintf("%q", n)
	}
	return out
}

// Contexts resolves which kubeconfig contexts to run on, from the kubeconfig as kubectl's flags
// load it (--kubeconfig, else $KUBECONFIG, else ~/.kube/config): every context sorted by name when
// all is true, else names in the order given (duplicates once), each of which must exist.
func Contexts(flags *genericclioptions.ConfigFlags, names []string, all bool) ([]string, error) {
	raw, err := flags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig to list its contexts: %w", err)
	}
	known := make([]string, 0, len(raw.Contexts))
	for name := range raw.Contexts {
		known = append(known, name)
	}
	sort.Strings(known)
	if all {
		if len(known) == 0 {
			return nil, fmt.Errorf("the kubeconfig has no contexts: --all-contexts has nothing to show")
		}
		return known, nil
	}
	var out, unknown []string
	seen := map[string]bool{}
	for _, n := range names {
		switch {
		case seen[n]:
			continue
		case raw.Contexts[n] == nil:
			unknown = append(unknown, n)
		}
		seen[n] = true
		out = append(out, n)
	}
	if len(unknown) > 0 {
		return nil, &UnknownContextError{Unknown: unknown, Known: known}
	}
	return out, nil
}

// FlagsFor returns a copy of kubectl's flags that selects context: every other flag the user gave
// (--kubeconfig, --namespace, --user, --request-timeout, impersonation...) applies to it as to the
// current context. A copy, not the flags with Context changed: contexts run concurrently, and
// ConfigFlags caches the client configuration it loads first.
func FlagsFor(base *genericclioptions.ConfigFlags, context string) *genericclioptions.ConfigFlags {
	f := genericclioptions.NewConfigFlags(true)
	f.CacheDir, f.KubeConfig = base.CacheDir, base.KubeConfig
	f.ClusterName, f.AuthInfoName, f.Namespace = base.ClusterName, base.AuthInfoName, base.Namespace
	f.APIServer, f.TLSServerName, f.Insecure = base.APIServer, base.TLSServerName, base.Insecure
	f.CertFile, f.KeyFile, f.CAFile, f.BearerToken = base.CertFile, base.KeyFile, base.CAFile, base.BearerToken
	f.Impersonate, f.ImpersonateUID, f.ImpersonateGroup = base.Impersonate, base.ImpersonateUID, base.ImpersonateGroup
	f.ImpersonateUserExtra, f.Username, f.Password = base.ImpersonateUserExtra, base.Username, base.Password
	f.Timeout, f.DisableCompression, f.ProxyURL = base.Timeout, base.DisableCompression, base.ProxyURL
	f.WrapConfigFn = base.WrapConfigFn
	f.Context = &context
	return f
}
