package syncsecret

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Every error below names the flag and the file at fault but never quotes what was read: the
// inputs are credentials, and error messages end up in terminals, CI logs and bug reports.

// ReadFile reads the file given to flag, with an error that names both and says what is wrong.
func ReadFile(flag, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s %s: the file does not exist", flag, path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%s %s: the file is not readable (permission denied)", flag, path)
	case err != nil:
		return nil, fmt.Errorf("%s %s: cannot read the file: %w", flag, path, errors.Unwrap(err))
	case len(strings.TrimSpace(string(data))) == 0:
		return nil, fmt.Errorf("%s %s: the file is empty", flag, path)
	}
	return data, nil
}

// GitOptions are the inputs of a Git credentials Secret.
type GitOptions struct {
	// URL of the repository: https:// for basic auth, ssh:// for a key.
	URL string
	// Username and Password authenticate over HTTPS.
	Username string
	Password string
	// PrivateKey is a PEM private key for SSH; with it, Password is its passphrase (if any).
	PrivateKey []byte
	// PrivateKeySource names where PrivateKey came from, for errors (e.g. "--private-key-file ./id").
	PrivateKeySource string
	// KnownHosts holds the host keys of the SSH server in known_hosts format.
	KnownHosts       []byte
	KnownHostsSource string
	// CACert is a PEM bundle of certificate authorities for HTTPS.
	CACert       []byte
	CACertSource string
}

// Git builds the Secret of a GitRepository: username and password for https:// URLs, or
// identity, identity.pub and known_hosts for ssh:// URLs; ca.crt with either.
func Git(name, namespace string, o GitOptions) (*corev1.Secret, error) {
	data := map[string][]byte{}
	switch GitTransport(o.URL) {
	case TransportHTTPS:
		if len(o.PrivateKey) > 0 {
			return nil, fmt.Errorf("--url %s is an HTTPS URL, which authenticates with --username and --password: an SSH private key only works with an ssh:// URL", o.URL)
		}
		if (o.Username == "") != (o.Password == "") {
			return nil, errors.New("--username and a password (--password or --password-stdin) go together: HTTPS basic auth needs both")
		}
		if o.Username == "" && len(o.CACert) == 0 {
			return nil, errors.New("nothing to put in the Secret: give --username with --password or --password-stdin (and/or --ca-file)")
		}
		if o.Username != "" {
			data[KeyUsername], data[KeyPassword] = []byte(o.Username), []byte(o.Password)
		}
	case TransportSSH:
		if !strings.HasPrefix(strings.ToLower(o.URL), "ssh://") {
			return nil, fmt.Errorf("--url %s: source-controller accepts only ssh:// URLs for SSH, e.g. ssh://%s", o.URL, scpToSSH(o.URL))
		}
		if o.Username != "" {
			return nil, fmt.Errorf("--url %s is an SSH URL, which authenticates with --private-key-file: --username only works with HTTPS URLs (put the SSH user in the URL)", o.URL)
		}
		if len(o.PrivateKey) == 0 {
			return nil, fmt.Errorf("--url %s is an SSH URL: give --private-key-file", o.URL)
		}
		if len(o.KnownHosts) == 0 {
			return nil, fmt.Errorf("--url %s is an SSH URL: give --known-hosts-file with the host keys of %s; the plugin does not scan host keys over the network (check them, then e.g. ssh-keyscan %s > known_hosts)",
				o.URL, URLHost(o.URL), URLHost(o.URL))
		}
		pub, err := sshPublicKey(o.PrivateKey, o.Password, o.PrivateKeySource)
		if err != nil {
			return nil, err
		}
		if err := validateKnownHosts(o.KnownHosts, o.KnownHostsSource); err != nil {
			return nil, err
		}
		data[KeyIdentity], data[KeyIdentityPub], data[KeyKnownHosts] = o.PrivateKey, pub, o.KnownHosts
		if o.Password != "" {
			// source-controller decrypts a passphrase-protected identity with the password key.
			data[KeyPassword] = []byte(o.Password)
		}
	default:
		return nil, fmt.Errorf("--url %q: a Git URL must start with https://, http:// or ssh://", o.URL)
	}
	if len(o.CACert) > 0 {
		if err := validateCACert(o.CACert, o.CACertSource); err != nil {
			return nil, err
		}
		data[KeyCACert] = o.CACert
	}
	return newSecret(name, namespace, corev1.SecretTypeOpaque, data), nil
}

// scpToSSH turns git@host:org/repo into git@host/org/repo for the error message.
func scpToSSH(s string) string {
	at := strings.Index(s, "@")
	if c := strings.Index(s[at+1:], ":"); c >= 0 {
		return s[:at+1+c] + "/" + s[at+2+c:]
	}
	return s
}

// sshPublicKey parses a PEM private key (decrypting it with passphrase if it is protected) and
// returns its public key in authorized_keys format.
func sshPublicKey(key []byte, passphrase, source string) ([]byte, error) {
	if err := requirePEMPrivateKey(key, source); err != nil {
		return nil, err
	}
	var (
		raw any
		err error
	)
	if passphrase != "" {
		raw, err = ssh.ParseRawPrivateKeyWithPassphrase(key, []byte(passphrase))
	} else {
		raw, err = ssh.ParseRawPrivateKey(key)
	}
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		return nil, fmt.Errorf("%s: the private key is protected by a passphrase: give it with --password or --password-stdin", source)
	case errors.Is(err, x509.IncorrectPasswordError):
		return nil, fmt.Errorf("%s: the passphrase does not decrypt the private key", source)
	case err != nil:
		// The parsers' messages describe the structure, never the bytes.
		return nil, fmt.Errorf("%s: not a usable SSH private key: %w", source, err)
	}
	signer, err := ssh.NewSignerFromKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: unsupported SSH private key: %w", source, err)
	}
	return ssh.MarshalAuthorizedKey(signer.PublicKey()), nil
}

// requirePEMPrivateKey checks that key is a PEM block of a private key.
func requirePEMPrivateKey(key []byte, source string) error {
	block, _ := pem.Decode(key)
	if block == nil {
		return fmt.Errorf("%s: not a PEM private key (expected a -----BEGIN ... PRIVATE KEY----- block)", source)
	}
	if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
		return fmt.Errorf("%s: the PEM block is a %q, not a private key", source, block.Type)
	}
	return nil
}

func validateKnownHosts(data []byte, source string) error {
	rest, n := data, 0
	for {
		_, _, _, _, next, err := ssh.ParseKnownHosts(rest)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: not in known_hosts format: %w", source, err)
		}
		n++
		rest = next
	}
	if n == 0 {
		return fmt.Errorf("%s: no host key in it (expected known_hosts lines like \"github.com ssh-ed25519 AAAA...\")", source)
	}
	return nil
}

func validateCACert(data []byte, source string) error {
	rest, n := data, 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("%s: a certificate does not parse: %w", source, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s: no PEM certificate in it (expected -----BEGIN CERTIFICATE----- blocks)", source)
	}
	return nil
}

// GitHubAppOptions are the inputs of a GitHub App Secret.
type GitHubAppOptions struct {
	AppID string
	// Exactly one of InstallationID and InstallationOwner.
	InstallationID    string
	InstallationOwner string
	// PrivateKey is the App's PEM RSA private key.
	PrivateKey       []byte
	PrivateKeySource string
	// BaseURL is the API of a GitHub Enterprise Server, e.g. https://github.example.com/api/v3.
	BaseURL      string
	CACert       []byte
	CACertSource string
}

// GitHubApp builds the Secret of a GitRepository with provider github.
func GitHubApp(name, namespace string, o GitHubAppOptions) (*corev1.Secret, error) {
	if err := positiveInteger("--app-id", o.AppID); err != nil {
		return nil, err
	}
	switch {
	case o.InstallationID == "" && o.InstallationOwner == "":
		return nil, errors.New("give --app-installation-id or --app-installation-owner")
	case o.InstallationID != "" && o.InstallationOwner != "":
		return nil, errors.New("--app-installation-id and --app-installation-owner exclude each other (source-controller rejects a Secret with both)")
	}
	data := map[string][]byte{KeyGitHubAppID: []byte(o.AppID)}
	if o.InstallationID != "" {
		if err := positiveInteger("--app-installation-id", o.InstallationID); err != nil {
			return nil, err
		}
		data[KeyGitHubAppInstallationID] = []byte(o.InstallationID)
	} else {
		data[KeyGitHubAppInstallationOwner] = []byte(o.InstallationOwner)
	}
	if len(o.PrivateKey) == 0 {
		return nil, errors.New("give --app-private-key with the App's private key file")
	}
	if err := validateRSAKey(o.PrivateKey, o.PrivateKeySource); err != nil {
		return nil, err
	}
	data[KeyGitHubAppPrivateKey] = o.PrivateKey
	if o.BaseURL != "" {
		u, err := url.Parse(o.BaseURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("--app-base-url %q: expected the API URL of the GitHub Enterprise Server, e.g. https://github.example.com/api/v3", o.BaseURL)
		}
		data[KeyGitHubAppBaseURL] = []byte(o.BaseURL)
	}
	if len(o.CACert) > 0 {
		if err := validateCACert(o.CACert, o.CACertSource); err != nil {
			return nil, err
		}
		data[KeyCACert] = o.CACert
	}
	return newSecret(name, namespace, corev1.SecretTypeOpaque, data), nil
}

func positiveInteger(flag, value string) error {
	n, err := strconv.ParseInt(value, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("%s %q: must be a positive number (GitHub shows it on the App's settings page)", flag, value)
	}
	return nil
}

// validateRSAKey checks that key is a PEM RSA private key, as GitHub issues for Apps.
func validateRSAKey(key []byte, source string) error {
	if err := requirePEMPrivateKey(key, source); err != nil {
		return err
	}
	block, _ := pem.Decode(key)
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return nil
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("%s: the private key does not parse as RSA (PKCS#1 or PKCS#8)", source)
	}
	if _, ok := parsed.(*rsa.PrivateKey); !ok {
		return fmt.Errorf("%s: a GitHub App private key is RSA, this one is %T", source, parsed)
	}
	return nil
}

// OCIOptions are the inputs of a registry login Secret.
type OCIOptions struct {
	// Registry is the registry host (ghcr.io), or an oci:// URL from which the host is taken.
	Registry string
	Username string
	Password string
}

// OCI builds the kubernetes.io/dockerconfigjson Secret of an OCIRepository.
func OCI(name, namespace string, o OCIOptions) (*corev1.Secret, error) {
	host := RegistryHost(o.Registry)
	if host == "" {
		return nil, fmt.Errorf("--url %q: expected a registry host such as ghcr.io, or an oci:// URL", o.Registry)
	}
	if o.Username == "" || o.Password == "" {
		return nil, errors.New("give --username and a password (--password or --password-stdin)")
	}
	type entry struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	}
	cfg, err := json.Marshal(map[string]map[string]entry{"auths": {host: {
		Username: o.Username, Password: o.Password,
		Auth: base64.StdEncoding.EncodeToString([]byte(o.Username + ":" + o.Password)),
	}}})
	if err != nil {
		return nil, fmt.Errorf("encoding the registry login: %w", err)
	}
	return newSecret(name, namespace, corev1.SecretTypeDockerConfigJson, map[string][]byte{KeyDockerConfigJSON: cfg}), nil
}

// RegistryHost returns the host[:port] of a registry given as a host, host/path or oci:// URL.
func RegistryHost(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "oci://")
	if i := strings.Index(s, "/"); i >= 0 {
		s = s[:i]
	}
	if u, err := url.Parse("placeholder://" + s); s == "" || err != nil || u.Host != s || u.User != nil {
		return ""
	}
	return s
}

// BucketOptions are the inputs of an S3-compatible bucket Secret.
type BucketOptions struct {
	AccessKey string
	SecretKey string
}

// Bucket builds the Secret of a Bucket with the generic or aws provider.
func Bucket(name, namespace string, o BucketOptions) (*corev1.Secret, error) {
	if o.AccessKey == "" || o.SecretKey == "" {
		return nil, errors.New("give --access-key and a secret key (--secret-key or --secret-key-stdin)")
	}
	return newSecret(name, namespace, corev1.SecretTypeOpaque, map[string][]byte{
		KeyAccessKey: []byte(o.AccessKey), KeySecretKey: []byte(o.SecretKey),
	}), nil
}

func newSecret(name, namespace string, typ corev1.SecretType, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Type:       typ,
		Data:       data,
	}
}

// Unstructured returns the Secret as server-side apply wants it: data base64-encoded, nothing
// else (no creationTimestamp, no status).
func Unstructured(s *corev1.Secret) *unstructured.Unstructured {
	data := map[string]any{}
	for k, v := range s.Data {
		data[k] = base64.StdEncoding.EncodeToString(v)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"metadata":   map[string]any{"name": s.Name, "namespace": s.Namespace},
		"type":       string(s.Type),
		"data":       data,
	}}
}

// ExportYAML renders the Secret for a Git repository (to be encrypted with SOPS): values in
// stringData, readable and diffable once decrypted.
func ExportYAML(s *corev1.Secret) ([]byte, error) {
	keys := make([]string, 0, len(s.Data))
	for k := range s.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	stringData := map[string]any{}
	for _, k := range keys {
		stringData[k] = string(s.Data[k])
	}
	out, err := yaml.Marshal(map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"metadata":   map[string]any{"name": s.Name, "namespace": s.Namespace},
		"type":       string(s.Type),
		"stringData": stringData,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return append([]byte("---\n"), out...), nil
}
