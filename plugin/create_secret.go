package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fluxcd/pkg/ssa"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render/syncsecret"
)

// Secret values are read from files, flags and stdin, and go to the API server or, with --export,
// to stdout. Nothing else prints them: messages name keys, flags and files only.

const createSecretExample = `  # Git over HTTPS with a token as the password, read from stdin (keeps it out of shell history)
  echo "$GITHUB_TOKEN" | kubectl fluxinstance create secret git flux-system -n flux-system \
    --url=https://github.com/my-org/my-fleet.git --username=git --password-stdin

  # Git over SSH with a deploy key and the host keys you checked
  kubectl fluxinstance create secret git flux-system --url=ssh://git@github.com/my-org/my-fleet.git \
    --private-key-file=./identity --known-hosts-file=./known_hosts

  # A GitHub App (sync.provider: github)
  kubectl fluxinstance create secret githubapp flux-system --app-id=1 --app-installation-id=2 --app-private-key=./app.pem

  # Registry login for an OCIRepository, printed for SOPS instead of applied
  kubectl fluxinstance create secret oci ghcr-auth --url=ghcr.io --username=flux --password-stdin --export > ghcr-auth.yaml

  # S3-compatible bucket
  kubectl fluxinstance create secret bucket bucket-auth --access-key=AKIA... --secret-key-stdin < secret-key.txt`

// NewCmdCreate returns the `create` command group.
func NewCmdCreate(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create objects a FluxInstance needs, such as the Secret of its sync source",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	secret := &cobra.Command{
		Use:   "secret",
		Short: "Create the Secret that the sync source of a FluxInstance authenticates with",
		Long: `Create the Secret named by spec.sync.pullSecret, with the keys Flux's source-controller reads, by
server-side apply into the namespace of -n (or of the kubeconfig context), or print it as YAML with --export
(to encrypt with SOPS and commit). Values are never printed except with --export.`,
		Example: createSecretExample,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	secret.AddCommand(
		newCmdCreateSecretGit(configFlags, streams),
		newCmdCreateSecretGitHubApp(configFlags, streams),
		newCmdCreateSecretOCI(configFlags, streams),
		newCmdCreateSecretBucket(configFlags, streams),
	)
	cmd.AddCommand(secret)
	return cmd
}

// createSecretOptions is what every `create secret` sub-command shares.
type createSecretOptions struct {
	Export    bool
	Overwrite bool

	name        string
	namespace   string
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
}

func (o *createSecretOptions) addFlags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&o.Export, "export", false, "Print the Secret as YAML (values in stringData) instead of applying it.")
	cmd.Flags().BoolVar(&o.Overwrite, "overwrite", false, "Replace the keys of an existing Secret that this plugin did not create.")
}

// complete reads the name and the namespace (-n, else the kubeconfig context's).
func (o *createSecretOptions) complete(cmd *cobra.Command, args []string) error {
	o.name = args[0]
	if errs := validation.IsDNS1123Subdomain(o.name); len(errs) > 0 {
		return usageError(cmd, "invalid Secret name %q: %s", o.name, strings.Join(errs, "; "))
	}
	ns, _, err := o.configFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return fmt.Errorf("reading the namespace from the kubeconfig: %w", err)
	}
	o.namespace = ns
	return nil
}

// readStdin reads a value piped to the command, without the line break an echo adds.
func (o *createSecretOptions) readStdin(flag string) (string, error) {
	data, err := io.ReadAll(o.In)
	if err != nil {
		return "", fmt.Errorf("%s: reading stdin: %w", flag, err)
	}
	value := strings.TrimRight(string(data), "\r\n")
	if value == "" {
		return "", fmt.Errorf("%s: nothing on stdin", flag)
	}
	return value, nil
}

// secretValue resolves a value given either as a flag or on stdin.
func (o *createSecretOptions) secretValue(value string, fromStdin bool, stdinFlag string) (string, error) {
	if fromStdin {
		return o.readStdin(stdinFlag)
	}
	return value, nil
}

// requireSecretFlag checks a secret value that comes either from --flag or from --flag-stdin
// (exactly one of them), and warns when it was typed on the command line.
func (o *createSecretOptions) requireSecretFlag(cmd *cobra.Command, value string, fromStdin bool, flag string) error {
	stdinFlag := flag + "-stdin"
	switch {
	case value != "" && fromStdin:
		return usageError(cmd, "--%s and --%s exclude each other", flag, stdinFlag)
	case value == "" && !fromStdin:
		return usageError(cmd, "--%s (or --%s) is required", stdinFlag, flag)
	}
	o.warnCommandLine(cmd, flag, stdinFlag)
	return nil
}

// warnCommandLine tells users that a value given as a flag ends up in shell history and in the
// process list, as docker login does.
func (o *createSecretOptions) warnCommandLine(cmd *cobra.Command, flag, stdinFlag string) {
	if f := cmd.Flags().Lookup(flag); f != nil && f.Changed {
		fmt.Fprintf(o.ErrOut, "Warning: --%s on the command line is visible in shell history and to other users of this machine; prefer --%s\n", flag, stdinFlag)
	}
}

// write prints the Secret with --export, or applies it with server-side apply.
func (o *createSecretOptions) write(ctx context.Context, secret *corev1.Secret) error {
	if o.Export {
		data, err := syncsecret.ExportYAML(secret)
		if err != nil {
			return err
		}
		_, err = o.Out.Write(data)
		return err
	}
	conn, err := kube.Connect(o.configFlags)
	if err != nil {
		return err
	}
	if err := o.checkExisting(ctx, conn.Client, secret); err != nil {
		return err
	}
	rm := ssa.NewResourceManager(conn.Client, nil, ssa.Owner{Field: ownership.PluginFieldManager})
	obj := syncsecret.Unstructured(secret)
	entry, err := rm.Apply(ctx, obj, ssa.DefaultApplyOptions())
	if err != nil {
		return secretApplyError(err, secret)
	}
	fmt.Fprintf(o.Out, "secret/%s %s\n", secret.Name, entry.Action)
	return nil
}

// checkExisting refuses to change a Secret of another type (its type is immutable, and another
// kind of credentials lives there), and one that this plugin did not create unless --overwrite:
// the refusal names the keys that would change, never their values.
func (o *createSecretOptions) checkExisting(ctx context.Context, c client.Client, secret *corev1.Secret) error {
	live := &corev1.Secret{}
	err := c.Get(ctx, client.ObjectKeyFromObject(secret), live)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("reading Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	ref := fmt.Sprintf("Secret %s/%s", secret.Namespace, secret.Name)
	if live.Type != secret.Type {
		return fmt.Errorf("%s exists with type %s, not %s: it holds other credentials; choose another name, or delete it first", ref, live.Type, secret.Type)
	}
	if o.Overwrite || slices.ContainsFunc(live.ManagedFields, func(e metav1.ManagedFieldsEntry) bool {
		return e.Manager == ownership.PluginFieldManager
	}) {
		return nil
	}
	changed := changedKeys(live, secret)
	if len(changed) == 0 {
		return nil
	}
	return fmt.Errorf("%s exists and was not created by this plugin: applying would change its keys %s; pass --overwrite to replace them",
		ref, strings.Join(changed, ", "))
}

// changedKeys lists the keys whose value the new Secret sets differently (or adds), sorted. The
// Secrets the commands build carry their values in Data.
func changedKeys(live, secret *corev1.Secret) []string {
	var out []string
	for k, v := range secret.Data {
		if !bytes.Equal(live.Data[k], v) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// secretApplyError says what to do when the Secret's namespace is missing, the usual mistake.
func secretApplyError(err error, secret *corev1.Secret) error {
	var status apierrors.APIStatus
	if errors.As(err, &status) && apierrors.IsNotFound(err) {
		if d := status.Status().Details; d != nil && d.Kind == "namespaces" {
			return fmt.Errorf("cannot create Secret %s/%s: namespace %q does not exist: create it (kubectl create namespace %s) or pass -n with the FluxInstance's namespace",
				secret.Namespace, secret.Name, secret.Namespace, secret.Namespace)
		}
	}
	return fmt.Errorf("applying Secret %s/%s: %w", secret.Namespace, secret.Name, err)
}

func runCreateSecret(cmd *cobra.Command, args []string, o *createSecretOptions, validate func(*cobra.Command) error, build func() (*corev1.Secret, error)) error {
	if err := o.complete(cmd, args); err != nil {
		return err
	}
	if err := validate(cmd); err != nil {
		return err
	}
	secret, err := build()
	if err != nil {
		return err
	}
	return o.write(cmd.Context(), secret)
}

// CreateSecretGitOptions holds the flags of `create secret git`.
type CreateSecretGitOptions struct {
	createSecretOptions
	URL            string
	Username       string
	Password       string
	PasswordStdin  bool
	PrivateKeyFile string
	KnownHostsFile string
	CAFile         string
}

func newCmdCreateSecretGit(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CreateSecretGitOptions{createSecretOptions: createSecretOptions{configFlags: configFlags, IOStreams: streams}}
	cmd := &cobra.Command{
		Use:   "git NAME --url=URL (--username=USER --password-stdin | --private-key-file=FILE --known-hosts-file=FILE) [--ca-file=FILE]",
		Short: "Create a Secret for a GitRepository: basic auth over HTTPS or an SSH key",
		Long: `Create a Secret for a GitRepository. With an https:// URL: the keys username and password. With an
ssh:// URL: identity (the private key), identity.pub and known_hosts, plus password for a passphrase-protected
key. --ca-file adds ca.crt. The plugin does not scan host keys over the network: give --known-hosts-file.`,
		Example: createSecretExample,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCreateSecret(cmd, args, &o.createSecretOptions, o.Validate, o.Build)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.URL, "url", "", "The Git repository URL (https:// or ssh://), as in spec.sync.url.")
	f.StringVarP(&o.Username, "username", "u", "", "The username for HTTPS basic auth.")
	f.StringVarP(&o.Password, "password", "p", "", "The password or token for HTTPS, or the passphrase of --private-key-file. Prefer --password-stdin.")
	f.BoolVar(&o.PasswordStdin, "password-stdin", false, "Read the password (or key passphrase) from stdin.")
	f.StringVar(&o.PrivateKeyFile, "private-key-file", "", "A PEM SSH private key file, for ssh:// URLs.")
	f.StringVar(&o.KnownHostsFile, "known-hosts-file", "", "A known_hosts file with the SSH host keys of the Git server, for ssh:// URLs.")
	f.StringVar(&o.CAFile, "ca-file", "", "A PEM file of certificate authorities for an HTTPS Git server.")
	o.addFlags(cmd)
	return cmd
}

// Validate checks the flags before anything is read.
func (o *CreateSecretGitOptions) Validate(cmd *cobra.Command) error {
	if o.URL == "" {
		return usageError(cmd, "--url is required")
	}
	if o.Password != "" && o.PasswordStdin {
		return usageError(cmd, "--password and --password-stdin exclude each other")
	}
	switch syncsecret.GitTransport(o.URL) {
	case syncsecret.TransportSSH:
		if o.PrivateKeyFile == "" {
			return usageError(cmd, "--url %s is an SSH URL: --private-key-file is required", o.URL)
		}
		if o.KnownHostsFile == "" {
			host := syncsecret.URLHost(o.URL)
			return usageError(cmd, "--url %s is an SSH URL: --known-hosts-file is required; the plugin does not scan the host keys of %s over the network (scan them with ssh-keyscan %s > known_hosts and check the fingerprints against those the Git server publishes)", o.URL, host, host)
		}
	case syncsecret.TransportHTTPS:
		if o.PrivateKeyFile != "" || o.KnownHostsFile != "" {
			return usageError(cmd, "--url %s is an HTTPS URL: --private-key-file and --known-hosts-file are for ssh:// URLs; use --username with --password-stdin", o.URL)
		}
	default:
		return usageError(cmd, "--url %q: a Git URL must start with https://, http:// or ssh://", o.URL)
	}
	o.warnCommandLine(cmd, "password", "password-stdin")
	return nil
}

// Build reads the files and stdin and builds the Secret.
func (o *CreateSecretGitOptions) Build() (*corev1.Secret, error) {
	in := syncsecret.GitOptions{URL: o.URL, Username: o.Username}
	var err error
	if in.Password, err = o.secretValue(o.Password, o.PasswordStdin, "--password-stdin"); err != nil {
		return nil, err
	}
	if o.PrivateKeyFile != "" {
		in.PrivateKeySource = "--private-key-file " + o.PrivateKeyFile
		if in.PrivateKey, err = syncsecret.ReadFile("--private-key-file", o.PrivateKeyFile); err != nil {
			return nil, err
		}
	}
	if o.KnownHostsFile != "" {
		in.KnownHostsSource = "--known-hosts-file " + o.KnownHostsFile
		if in.KnownHosts, err = syncsecret.ReadFile("--known-hosts-file", o.KnownHostsFile); err != nil {
			return nil, err
		}
	}
	if o.CAFile != "" {
		in.CACertSource = "--ca-file " + o.CAFile
		if in.CACert, err = syncsecret.ReadFile("--ca-file", o.CAFile); err != nil {
			return nil, err
		}
	}
	secret, err := syncsecret.Git(o.name, o.namespace, in)
	if err != nil {
		return nil, err
	}
	if pub := secret.Data[syncsecret.KeyIdentityPub]; len(pub) > 0 {
		// The public key is no secret: the user adds it to the repository as a deploy key.
		fmt.Fprintf(o.ErrOut, "Deploy key (add it to the repository with read access): %s", pub)
	}
	return secret, nil
}

// CreateSecretGitHubAppOptions holds the flags of `create secret githubapp`.
type CreateSecretGitHubAppOptions struct {
	createSecretOptions
	AppID             string
	InstallationID    string
	InstallationOwner string
	PrivateKeyFile    string
	BaseURL           string
	CAFile            string
}

func newCmdCreateSecretGitHubApp(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CreateSecretGitHubAppOptions{createSecretOptions: createSecretOptions{configFlags: configFlags, IOStreams: streams}}
	cmd := &cobra.Command{
		Use:   "githubapp NAME --app-id=ID (--app-installation-id=ID | --app-installation-owner=OWNER) --app-private-key=FILE",
		Short: "Create a Secret for a GitRepository with provider github (a GitHub App)",
		Long: `Create a Secret for a GitRepository with sync.provider github: the keys githubAppID,
githubAppInstallationID (or githubAppInstallationOwner), githubAppPrivateKey, and githubAppBaseURL for a GitHub
Enterprise Server.`,
		Example: createSecretExample,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCreateSecret(cmd, args, &o.createSecretOptions, o.Validate, o.Build)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.AppID, "app-id", "", "The GitHub App ID (a number, on the App's settings page).")
	f.StringVar(&o.InstallationID, "app-installation-id", "", "The ID of the App's installation in the organization or account.")
	f.StringVar(&o.InstallationOwner, "app-installation-owner", "", "The organization or user the App is installed in, instead of --app-installation-id.")
	f.StringVar(&o.PrivateKeyFile, "app-private-key", "", "The App's PEM private key file.")
	f.StringVar(&o.BaseURL, "app-base-url", "", "The API URL of a GitHub Enterprise Server, e.g. https://github.example.com/api/v3.")
	f.StringVar(&o.CAFile, "ca-file", "", "A PEM file of certificate authorities for a GitHub Enterprise Server.")
	o.addFlags(cmd)
	return cmd
}

// Validate checks the flags before anything is read.
func (o *CreateSecretGitHubAppOptions) Validate(cmd *cobra.Command) error {
	switch {
	case o.AppID == "":
		return usageError(cmd, "--app-id is required")
	case o.PrivateKeyFile == "":
		return usageError(cmd, "--app-private-key is required")
	case o.InstallationID == "" && o.InstallationOwner == "":
		return usageError(cmd, "--app-installation-id or --app-installation-owner is required")
	case o.InstallationID != "" && o.InstallationOwner != "":
		return usageError(cmd, "--app-installation-id and --app-installation-owner exclude each other")
	}
	return nil
}

// Build reads the files and builds the Secret.
func (o *CreateSecretGitHubAppOptions) Build() (*corev1.Secret, error) {
	in := syncsecret.GitHubAppOptions{
		AppID: o.AppID, InstallationID: o.InstallationID, InstallationOwner: o.InstallationOwner, BaseURL: o.BaseURL,
		PrivateKeySource: "--app-private-key " + o.PrivateKeyFile,
	}
	var err error
	if in.PrivateKey, err = syncsecret.ReadFile("--app-private-key", o.PrivateKeyFile); err != nil {
		return nil, err
	}
	if o.CAFile != "" {
		in.CACertSource = "--ca-file " + o.CAFile
		if in.CACert, err = syncsecret.ReadFile("--ca-file", o.CAFile); err != nil {
			return nil, err
		}
	}
	return syncsecret.GitHubApp(o.name, o.namespace, in)
}

// CreateSecretOCIOptions holds the flags of `create secret oci`.
type CreateSecretOCIOptions struct {
	createSecretOptions
	URL           string
	Username      string
	Password      string
	PasswordStdin bool
}

func newCmdCreateSecretOCI(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CreateSecretOCIOptions{createSecretOptions: createSecretOptions{configFlags: configFlags, IOStreams: streams}}
	cmd := &cobra.Command{
		Use:     "oci NAME --url=REGISTRY --username=USER --password-stdin",
		Short:   "Create a registry login Secret (kubernetes.io/dockerconfigjson) for an OCIRepository",
		Example: createSecretExample,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCreateSecret(cmd, args, &o.createSecretOptions, o.Validate, o.Build)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.URL, "url", "", "The registry host, e.g. ghcr.io (an oci:// URL works too: its host is used).")
	f.StringVarP(&o.Username, "username", "u", "", "The registry username.")
	f.StringVarP(&o.Password, "password", "p", "", "The registry password or token. Prefer --password-stdin.")
	f.BoolVar(&o.PasswordStdin, "password-stdin", false, "Read the password from stdin.")
	o.addFlags(cmd)
	return cmd
}

// Validate checks the flags before anything is read.
func (o *CreateSecretOCIOptions) Validate(cmd *cobra.Command) error {
	switch {
	case o.URL == "":
		return usageError(cmd, "--url is required")
	case syncsecret.RegistryHost(o.URL) == "":
		return usageError(cmd, "--url %q: expected a registry host such as ghcr.io, or an oci:// URL", o.URL)
	case o.Username == "":
		return usageError(cmd, "--username is required")
	}
	return o.requireSecretFlag(cmd, o.Password, o.PasswordStdin, "password")
}

// Build reads stdin and builds the Secret.
func (o *CreateSecretOCIOptions) Build() (*corev1.Secret, error) {
	password, err := o.secretValue(o.Password, o.PasswordStdin, "--password-stdin")
	if err != nil {
		return nil, err
	}
	return syncsecret.OCI(o.name, o.namespace, syncsecret.OCIOptions{Registry: o.URL, Username: o.Username, Password: password})
}

// CreateSecretBucketOptions holds the flags of `create secret bucket`.
type CreateSecretBucketOptions struct {
	createSecretOptions
	AccessKey      string
	SecretKey      string
	SecretKeyStdin bool
}

func newCmdCreateSecretBucket(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CreateSecretBucketOptions{createSecretOptions: createSecretOptions{configFlags: configFlags, IOStreams: streams}}
	cmd := &cobra.Command{
		Use:     "bucket NAME --access-key=KEY --secret-key-stdin",
		Short:   "Create a Secret for a Bucket (S3-compatible): the keys accesskey and secretkey",
		Example: createSecretExample,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCreateSecret(cmd, args, &o.createSecretOptions, o.Validate, o.Build)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.AccessKey, "access-key", "", "The access key ID.")
	f.StringVar(&o.SecretKey, "secret-key", "", "The secret access key. Prefer --secret-key-stdin.")
	f.BoolVar(&o.SecretKeyStdin, "secret-key-stdin", false, "Read the secret access key from stdin.")
	o.addFlags(cmd)
	return cmd
}

// Validate checks the flags before anything is read.
func (o *CreateSecretBucketOptions) Validate(cmd *cobra.Command) error {
	switch {
	case o.AccessKey == "":
		return usageError(cmd, "--access-key is required")
	}
	return o.requireSecretFlag(cmd, o.SecretKey, o.SecretKeyStdin, "secret-key")
}

// Build reads stdin and builds the Secret.
func (o *CreateSecretBucketOptions) Build() (*corev1.Secret, error) {
	secretKey, err := o.secretValue(o.SecretKey, o.SecretKeyStdin, "--secret-key-stdin")
	if err != nil {
		return nil, err
	}
	return syncsecret.Bucket(o.name, o.namespace, syncsecret.BucketOptions{AccessKey: o.AccessKey, SecretKey: secretKey})
}
