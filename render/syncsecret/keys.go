// Package syncsecret builds the Secrets that a FluxInstance's sync source authenticates with, and
// knows which keys each sync kind and provider needs. It is pure: inputs in, Secrets out, no
// cluster client. Key names are those read by Flux's source-controller (api v1.9.4 docs and
// github.com/fluxcd/pkg/runtime/secrets) and written by `flux create secret`.
package syncsecret

import (
	"net/url"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Keys of the Secrets that source-controller reads.
const (
	KeyUsername                   = "username"
	KeyPassword                   = "password"
	KeyBearerToken                = "bearerToken"
	KeyCACert                     = "ca.crt"
	KeyIdentity                   = "identity"
	KeyIdentityPub                = "identity.pub"
	KeyKnownHosts                 = "known_hosts"
	KeyGitHubAppID                = "githubAppID"
	KeyGitHubAppInstallationID    = "githubAppInstallationID"
	KeyGitHubAppInstallationOwner = "githubAppInstallationOwner"
	KeyGitHubAppPrivateKey        = "githubAppPrivateKey"
	KeyGitHubAppBaseURL           = "githubAppBaseURL"
	KeyAccessKey                  = "accesskey"
	KeySecretKey                  = "secretkey"
	KeyDockerConfigJSON           = corev1.DockerConfigJsonKey
)

// The `kubectl fluxinstance create secret` sub-commands, one per kind of Secret.
const (
	CreateGit       = "git"
	CreateGitHubApp = "githubapp"
	CreateOCI       = "oci"
	CreateBucket    = "bucket"
)

// Sync source kinds and providers of a FluxInstance.
const (
	KindGitRepository = "GitRepository"
	KindOCIRepository = "OCIRepository"
	KindBucket        = "Bucket"

	ProviderGeneric = "generic"
	ProviderAWS     = "aws"
	ProviderAzure   = "azure"
	ProviderGCP     = "gcp"
	ProviderGitHub  = "github"
)

// Git transports, as told by the URL scheme.
const (
	TransportHTTPS = "https"
	TransportSSH   = "ssh"
)

// GitTransport returns TransportHTTPS for http(s):// URLs, TransportSSH for ssh:// and scp-like
// (git@host:path) URLs, and "" for anything else.
func GitTransport(rawURL string) string {
	lower := strings.ToLower(rawURL)
	switch {
	case strings.HasPrefix(lower, "https://"), strings.HasPrefix(lower, "http://"):
		return TransportHTTPS
	case strings.HasPrefix(lower, "ssh://"):
		return TransportSSH
	case !strings.Contains(lower, "://") && strings.Contains(lower, "@") && strings.Contains(lower, ":"):
		return TransportSSH
	}
	return ""
}

// URLHost returns the host name (without port or user) of a URL with or without a scheme, or of
// an scp-like Git address.
func URLHost(rawURL string) string {
	s := rawURL
	if !strings.Contains(s, "://") {
		if at := strings.Index(s, "@"); at >= 0 && GitTransport(s) == TransportSSH {
			s = s[at+1:]
			if c := strings.Index(s, ":"); c >= 0 {
				return strings.ToLower(s[:c])
			}
			return strings.ToLower(s)
		}
		s = "placeholder://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}

// Requirement is what a sync source needs from the Secret named by sync.pullSecret.
type Requirement struct {
	// Type is the Secret type the controller insists on; "" when any type works.
	Type corev1.SecretType
	// AnyOf lists alternative sets of keys: the Secret must have every key of at least one set.
	// Empty when the source does not read credentials from the Secret (a cloud identity).
	AnyOf [][]string
	// Create is the `create secret` sub-command that makes such a Secret; "" when none does.
	Create string
}

// Required returns what a sync source of kind with provider and url needs from its pull secret.
func Required(kind, provider, rawURL string) Requirement {
	if provider == "" {
		provider = ProviderGeneric
	}
	switch kind {
	case KindGitRepository:
		switch provider {
		case ProviderGitHub:
			// Exactly one of the installation ID or owner (source-controller rejects both).
			return Requirement{Create: CreateGitHubApp, AnyOf: [][]string{
				{KeyGitHubAppID, KeyGitHubAppInstallationID, KeyGitHubAppPrivateKey},
				{KeyGitHubAppID, KeyGitHubAppInstallationOwner, KeyGitHubAppPrivateKey},
			}}
		case ProviderGeneric:
			if GitTransport(rawURL) == TransportSSH {
				return Requirement{Create: CreateGit, AnyOf: [][]string{{KeyIdentity, KeyKnownHosts}}}
			}
			return Requirement{Create: CreateGit, AnyOf: [][]string{{KeyUsername, KeyPassword}, {KeyBearerToken}}}
		}
		// aws and azure authenticate with the controller's cloud identity.
		return Requirement{}
	case KindOCIRepository:
		if provider == ProviderGeneric {
			return Requirement{Type: corev1.SecretTypeDockerConfigJson, Create: CreateOCI, AnyOf: [][]string{{KeyDockerConfigJSON}}}
		}
		return Requirement{}
	case KindBucket:
		switch provider {
		case ProviderGeneric, ProviderAWS:
			return Requirement{Create: CreateBucket, AnyOf: [][]string{{KeyAccessKey, KeySecretKey}}}
		case ProviderAzure:
			return Requirement{AnyOf: [][]string{
				{"tenantId", "clientId", "clientSecret"},
				{"tenantId", "clientId", "clientCertificate"},
				{"clientId"},
				{"accountKey"},
				{"sasKey"},
			}}
		case ProviderGCP:
			return Requirement{AnyOf: [][]string{{"serviceaccount"}}}
		}
	}
	return Requirement{}
}

// Missing returns the keys the Secret lacks for the closest of the accepted key sets, or nil when
// it has every key of one of them.
func (r Requirement) Missing(keys []string) []string {
	var best []string
	for i, set := range r.AnyOf {
		var missing []string
		for _, k := range set {
			if !slices.Contains(keys, k) {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if i == 0 || len(missing) < len(best) {
			best = missing
		}
	}
	return best
}

// Describe lists the accepted key sets for a message, e.g. "username and password, or bearerToken".
func (r Requirement) Describe() string {
	sets := make([]string, 0, len(r.AnyOf))
	for _, set := range r.AnyOf {
		sets = append(sets, joinAnd(set))
	}
	return strings.Join(sets, ", or ")
}

func joinAnd(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}
