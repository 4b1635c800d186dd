// Package preflight checks a FluxInstance's sync configuration against the cluster before apply,
// diff or migrate changes anything, and says what would keep the sync source from authenticating:
// a missing or incomplete pull secret, a provider that does not fit the URL, a cloud identity that
// the rendered objects do not set up.
//
// It reads the pull secret only for its type and the names of its keys: values never reach a
// finding, a log or an error.
package preflight

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
	"github.com/fluxinstance/kubectl-fluxinstance/render/syncsecret"
)

// Severity says whether a finding is a problem (Warning; an error with --strict) or information
// the plugin cannot verify from the cluster (Note).
type Severity string

const (
	Warning Severity = "Warning"
	Note    Severity = "Note"
)

// Rule identifies the check behind a finding.
type Rule string

const (
	// RulePullSecretMissing: the Secret named by sync.pullSecret does not exist, or the source
	// needs one and sync.pullSecret is empty.
	RulePullSecretMissing Rule = "pull-secret-missing"
	// RulePullSecretKeys: the Secret lacks keys (or has the wrong type) for the sync kind and provider.
	RulePullSecretKeys Rule = "pull-secret-keys"
	// RuleTransportMismatch: an https:// URL with an SSH key Secret, or an SSH URL with a
	// username/password Secret.
	RuleTransportMismatch Rule = "transport-mismatch"
	// RuleGitHubURL: provider github with a URL that is not a GitHub HTTPS URL.
	RuleGitHubURL Rule = "github-url"
	// RuleAzureIdentity: provider azure without the workload identity annotation and label.
	RuleAzureIdentity Rule = "azure-identity"
	// RuleAWSIdentity: provider aws with a Bucket or OCI source (a reminder).
	RuleAWSIdentity Rule = "aws-identity"
	// RuleSkipped: the user may not get Secrets, so the Secret checks were skipped.
	RuleSkipped Rule = "skipped"
)

// Finding is one result of the preflight.
type Finding struct {
	Severity Severity
	Rule     Rule
	Message  string
}

// Command is how users type the plugin, for the commands that fix a finding.
const Command = "kubectl fluxinstance"

// Azure workload identity, as the Flux docs configure it on source-controller.
const (
	AzureClientIDAnnotation = "azure.workload.identity/client-id"
	AzureUseLabel           = "azure.workload.identity/use"
)

// Check runs every rule for the instance's sync. objects are the rendered objects (where the
// patches of spec.kustomize have been applied); c reads the pull secret.
func Check(ctx context.Context, c client.Reader, inst *fluxinstance.FluxInstance, objects []*unstructured.Unstructured) ([]Finding, error) {
	sync := inst.Spec.Sync
	if sync == nil {
		return nil, nil
	}
	ns := inst.Namespace
	provider := sync.Provider
	if provider == "" {
		provider = syncsecret.ProviderGeneric
	}
	req := syncsecret.Required(sync.Kind, provider, sync.URL)
	var out []Finding
	add := func(sev Severity, rule Rule, format string, args ...any) {
		out = append(out, Finding{Severity: sev, Rule: rule, Message: fmt.Sprintf(format, args...)})
	}

	// The Secret first: what it holds decides some of the URL checks.
	var keys []string
	found := false
	switch {
	case sync.PullSecret == "":
		if why := secretNeeded(sync, provider); why != "" {
			add(Warning, RulePullSecretMissing, "sync.pullSecret is empty, but %s: create the Secret with `%s` and set sync.pullSecret: %s",
				why, CreateCommand(sync, ns, suggestedName(inst)), suggestedName(inst))
		}
	default:
		secret := &corev1.Secret{}
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: sync.PullSecret}, secret)
		switch {
		case apierrors.IsForbidden(err):
			add(Note, RuleSkipped, "skipped checking the sync credentials: not allowed to get Secret %s/%s", ns, sync.PullSecret)
		case apierrors.IsNotFound(err):
			if req.Create != "" {
				add(Warning, RulePullSecretMissing, "Secret %s/%s (sync.pullSecret) does not exist, so the %s cannot authenticate: create it with `%s`",
					ns, sync.PullSecret, sync.Kind, CreateCommand(sync, ns, sync.PullSecret))
			} else {
				add(Warning, RulePullSecretMissing, "Secret %s/%s (sync.pullSecret) does not exist, so the %s cannot authenticate: create it%s",
					ns, sync.PullSecret, sync.Kind, withKeys(req))
			}
		case err != nil:
			return nil, fmt.Errorf("reading Secret %s/%s (sync.pullSecret): %w", ns, sync.PullSecret, err)
		default:
			found = true
			keys = keyNames(secret)
			// The values are not needed beyond this point: drop them.
			secret.Data, secret.StringData = nil, nil
			if f, ok := secretFinding(sync, provider, req, ns, secret.Type, keys); ok {
				out = append(out, f)
			}
		}
	}

	if sync.Kind == syncsecret.KindGitRepository && provider == syncsecret.ProviderGitHub {
		enterprise := found && slices.Contains(keys, syncsecret.KeyGitHubAppBaseURL)
		if msg := githubURLProblem(sync.URL, enterprise); msg != "" {
			add(Warning, RuleGitHubURL, "%s", msg)
		}
	}
	if provider == syncsecret.ProviderAzure {
		if missing := azureIdentityMissing(objects, ns); len(missing) > 0 {
			add(Warning, RuleAzureIdentity, "sync.provider azure authenticates with Azure Workload Identity, but the rendered source-controller lacks %s: add them with spec.kustomize.patches (a ServiceAccount patch with the annotation %s: <client ID of the managed identity>, a Deployment patch with the pod label %s: \"true\"), as the Flux docs show",
				strings.Join(missing, " and "), AzureClientIDAnnotation, AzureUseLabel)
		}
	}
	if provider == syncsecret.ProviderAWS && (sync.Kind == syncsecret.KindBucket || sync.Kind == syncsecret.KindOCIRepository) {
		add(Note, RuleAWSIdentity, "sync.provider aws: the %s authenticates as source-controller's service account %s/source-controller, which needs an EKS Pod Identity association (or an IRSA role) with read access to %s; the plugin cannot check that from the cluster",
			sync.Kind, ns, sync.URL)
	}
	return out, nil
}

// secretNeeded says why a source cannot work without a pull secret, or "" when it can (public
// repositories, registries and buckets, cloud identities).
func secretNeeded(sync *fluxinstance.Sync, provider string) string {
	if sync.Kind != syncsecret.KindGitRepository {
		return ""
	}
	switch {
	case provider == syncsecret.ProviderGitHub:
		return "sync.provider github authenticates as a GitHub App whose ID and private key come from that Secret"
	case provider == syncsecret.ProviderGeneric && syncsecret.GitTransport(sync.URL) == syncsecret.TransportSSH:
		return "an SSH URL needs a private key and known hosts from that Secret"
	}
	return ""
}

// secretFinding checks an existing Secret's type and key names.
func secretFinding(sync *fluxinstance.Sync, provider string, req syncsecret.Requirement, ns string, typ corev1.SecretType, keys []string) (Finding, bool) {
	ref := ns + "/" + sync.PullSecret
	fix, orFix := "", ""
	if req.Create != "" {
		cmd := CreateCommand(sync, ns, sync.PullSecret)
		fix, orFix = fmt.Sprintf(": recreate it with `%s`", cmd), fmt.Sprintf(", or recreate the Secret with `%s`", cmd)
	}
	if sync.Kind == syncsecret.KindGitRepository && provider == syncsecret.ProviderGeneric {
		hasKey := slices.Contains(keys, syncsecret.KeyIdentity)
		hasLogin := slices.Contains(keys, syncsecret.KeyUsername) || slices.Contains(keys, syncsecret.KeyBearerToken) ||
			(slices.Contains(keys, syncsecret.KeyPassword) && !hasKey)
		switch syncsecret.GitTransport(sync.URL) {
		case syncsecret.TransportHTTPS:
			if hasKey && !hasLogin {
				return Finding{Warning, RuleTransportMismatch, fmt.Sprintf("sync.url %s is an HTTPS URL, but Secret %s holds an SSH key (identity), which only works with an ssh:// URL: change sync.url to the repository's ssh:// URL%s",
					sync.URL, ref, orFix)}, true
			}
		case syncsecret.TransportSSH:
			if hasLogin && !hasKey {
				return Finding{Warning, RuleTransportMismatch, fmt.Sprintf("sync.url %s is an SSH URL, but Secret %s holds a username/password (or token), which only works with an https:// URL: change sync.url to the repository's https:// URL%s",
					sync.URL, ref, orFix)}, true
			}
		}
	}
	if req.Type != "" && typ != req.Type {
		return Finding{Warning, RulePullSecretKeys, fmt.Sprintf("Secret %s is of type %s, but a %s needs type %s%s", ref, typ, sync.Kind, req.Type, fix)}, true
	}
	if missing := req.Missing(keys); len(missing) > 0 {
		with := sync.Kind
		if provider != syncsecret.ProviderGeneric {
			with += " with provider " + provider
		}
		return Finding{Warning, RulePullSecretKeys, fmt.Sprintf("Secret %s lacks the keys %s that a %s needs (it needs %s)%s",
			ref, strings.Join(missing, ", "), with, req.Describe(), fix)}, true
	}
	return Finding{}, false
}

func withKeys(req syncsecret.Requirement) string {
	if len(req.AnyOf) == 0 {
		return ""
	}
	return " with the keys " + req.Describe()
}

// keyNames lists the keys of data and stringData, sorted.
func keyNames(s *corev1.Secret) []string {
	var keys []string
	for k := range s.Data {
		keys = append(keys, k)
	}
	for k := range s.StringData {
		if _, dup := s.Data[k]; !dup {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// githubURLProblem returns why a URL does not fit provider github, or "". With a GitHub Enterprise
// Server (githubAppBaseURL in the Secret) any HTTPS host may be GitHub.
func githubURLProblem(rawURL string, enterprise bool) string {
	if syncsecret.GitTransport(rawURL) != syncsecret.TransportHTTPS {
		return fmt.Sprintf("sync.provider github authenticates with a GitHub App over HTTPS, but sync.url %s is not an https:// URL: use https://github.com/OWNER/REPO.git", rawURL)
	}
	host := syncsecret.URLHost(rawURL)
	if enterprise || host == "github.com" || strings.HasSuffix(host, ".github.com") || strings.HasSuffix(host, ".ghe.com") {
		return ""
	}
	return fmt.Sprintf("sync.provider github is for repositories on GitHub, but sync.url %s is on %s: use provider generic for other Git servers, or add githubAppBaseURL (--app-base-url) to the Secret for a GitHub Enterprise Server", rawURL, host)
}

// azureIdentityMissing lists what the rendered source-controller lacks for Azure Workload Identity.
func azureIdentityMissing(objects []*unstructured.Unstructured, ns string) []string {
	var sa, deploy *unstructured.Unstructured
	for _, o := range objects {
		if o.GetName() != fluxinstance.SourceController || o.GetNamespace() != ns {
			continue
		}
		switch {
		case o.GetKind() == "ServiceAccount" && o.GroupVersionKind().Group == "":
			sa = o
		case o.GetKind() == "Deployment" && o.GroupVersionKind().Group == "apps":
			deploy = o
		}
	}
	var missing []string
	if sa == nil || sa.GetAnnotations()[AzureClientIDAnnotation] == "" {
		missing = append(missing, fmt.Sprintf("the ServiceAccount annotation %s", AzureClientIDAnnotation))
	}
	var labels map[string]string
	if deploy != nil {
		labels, _, _ = unstructured.NestedStringMap(deploy.Object, "spec", "template", "metadata", "labels")
	}
	if labels[AzureUseLabel] != "true" {
		missing = append(missing, fmt.Sprintf("the pod label %s: \"true\"", AzureUseLabel))
	}
	return missing
}

// suggestedName is the Secret name to suggest when sync.pullSecret is empty: the sync's name, as
// `flux bootstrap` names it.
func suggestedName(inst *fluxinstance.FluxInstance) string {
	if inst.Spec.Sync.Name != "" {
		return inst.Spec.Sync.Name
	}
	return inst.Namespace
}

// CreateCommand returns the `kubectl fluxinstance create secret` command that makes the Secret
// the sync needs, with placeholders in capitals for what only the user knows.
func CreateCommand(sync *fluxinstance.Sync, ns, name string) string {
	provider := sync.Provider
	if provider == "" {
		provider = syncsecret.ProviderGeneric
	}
	req := syncsecret.Required(sync.Kind, provider, sync.URL)
	head := fmt.Sprintf("%s create secret %s %s -n %s", Command, req.Create, shellQuote(name), shellQuote(ns))
	switch req.Create {
	case syncsecret.CreateGitHubApp:
		return head + " --app-id=APP_ID --app-installation-id=INSTALLATION_ID --app-private-key=PRIVATE_KEY_FILE"
	case syncsecret.CreateGit:
		if syncsecret.GitTransport(sync.URL) == syncsecret.TransportSSH {
			return head + " --url=" + shellQuote(sync.URL) + " --private-key-file=PRIVATE_KEY_FILE --known-hosts-file=KNOWN_HOSTS_FILE"
		}
		return head + " --url=" + shellQuote(sync.URL) + " --username=USERNAME --password-stdin"
	case syncsecret.CreateOCI:
		return head + " --url=" + shellQuote(syncsecret.RegistryHost(sync.URL)) + " --username=USERNAME --password-stdin"
	case syncsecret.CreateBucket:
		return head + " --access-key=ACCESS_KEY --secret-key-stdin"
	}
	return ""
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9@%+=:,./_-]+$`)

// shellQuote quotes s for a POSIX shell when it needs it, so the printed command can be pasted.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
