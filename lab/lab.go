package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// NamePrefix begins the name of every namespace a Lab creates. The full name
// is NamePrefix + Config.Name + "-" + pid + "-" + node, so that Sweep can
// find what a crashed run left behind and tell it apart from the namespaces
// of a run that is still alive.
const NamePrefix = "plab-"

// Address plan. All of it lives inside the lab's namespaces.
var (
	// internetGateway is the internet router's address on every link.
	internetGateway = netip.MustParseAddr("203.0.113.1")
	// firstPublic is the first address handed to a public host or router.
	firstPublic = netip.MustParseAddr("203.0.113.10")
)

// closeTimeout bounds Close, which must work after the caller's context is
// gone.
const closeTimeout = 20 * time.Second

// Config configures a Lab. The zero value works.
type Config struct {
	// Name is a short tag for this lab, unique among the labs one process
	// runs at the same time: lowercase letters and digits, at most 12.
	// Empty means "lab".
	Name string

	// FirewalledRouters makes every NAT router drop unsolicited packets
	// addressed to itself, as home routers do (see RouterConfig.Firewall).
	FirewalledRouters bool
}

var nameRE = regexp.MustCompile(`^[a-z0-9]{1,12}$`)

// active holds the names of labs this process has open, so that New refuses
// a second lab with the same name and Sweep spares live ones.
var active struct {
	mu    sync.Mutex
	names map[string]bool
}

// Lab is a set of network namespaces: one internet router and the hosts and
// NAT routers attached to it. Its methods are safe for concurrent use.
type Lab struct {
	ctx    context.Context // for setup commands
	cfg    Config
	prefix string // NamePrefix + Name + "-" + pid + "-"

	mu         sync.Mutex // protects the fields below
	closed     bool
	namespaces []string // created, in order
	nodes      map[string]bool
	internet   *Router
	nextPublic netip.Addr
	nextLAN    int // third octet of the next 10.0.N.0/24
	nextPort   int // number of the next link on the internet router
}

// New checks the prerequisites, sweeps away namespaces that a crashed
// earlier run with the same Config.Name left behind, and builds the
// internet router. Close the Lab to delete everything it created.
func New(ctx context.Context, cfg Config) (*Lab, error) {
	if cfg.Name == "" {
		cfg.Name = "lab"
	}
	if !nameRE.MatchString(cfg.Name) {
		return nil, fmt.Errorf("lab: name %q: want 1 to 12 lowercase letters or digits", cfg.Name)
	}
	if err := Check(); err != nil {
		return nil, err
	}
	active.mu.Lock()
	if active.names[cfg.Name] {
		active.mu.Unlock()
		return nil, fmt.Errorf("lab: a lab named %q is already open in this process", cfg.Name)
	}
	if active.names == nil {
		active.names = make(map[string]bool)
	}
	active.names[cfg.Name] = true
	active.mu.Unlock()

	l := &Lab{
		ctx:        ctx,
		cfg:        cfg,
		prefix:     fmt.Sprintf("%s%s-%d-", NamePrefix, cfg.Name, os.Getpid()),
		nodes:      make(map[string]bool),
		nextPublic: firstPublic,
		nextLAN:    1,
	}
	if err := sweepStale(ctx, NamePrefix+cfg.Name+"-"); err != nil {
		l.Close()
		return nil, err
	}
	ns, err := l.addNamespace("inet")
	if err != nil {
		l.Close()
		return nil, err
	}
	if err := sysctl(ctx, ns, "net.ipv4.ip_forward", "1"); err != nil {
		l.Close()
		return nil, err
	}
	l.internet = &Router{node: node{lab: l, name: "inet", ns: ns}, public: internetGateway}
	return l, nil
}

// Internet returns the router that joins every public address: the
// "internet". It has 203.0.113.1 on each of its links and a /32 route to
// each public address, so packets between public hosts cross one routed hop
// (and have their TTL decremented) as they would on the real internet.
func (l *Lab) Internet() *Router { return l.internet }

// AddPublicHost adds a host with a public address on the internet.
func (l *Lab) AddPublicHost(name string) (*Host, error) {
	ns, err := l.addNode(name)
	if err != nil {
		return nil, err
	}
	addr, err := l.attachPublic(ns, "eth0")
	if err != nil {
		return nil, fmt.Errorf("lab: add public host %s: %w", name, err)
	}
	return &Host{node: node{lab: l, name: name, ns: ns}, addr: addr}, nil
}

// AddNATHost adds a host on a private LAN of its own behind a NAT router of
// the given kind, configured as l's Config says.
func (l *Lab) AddNATHost(name string, kind NATKind) (*Host, error) {
	return l.AddNATHostConfig(name, RouterConfig{Kind: kind, Firewall: l.cfg.FirewalledRouters})
}

// AddNATHostConfig is AddNATHost with a router configuration of its own.
//
// The router's namespace is named after the host with an "-r" suffix. The
// LAN is 10.0.N.0/24 with the router at .1 and the host at .2.
func (l *Lab) AddNATHostConfig(name string, rc RouterConfig) (*Host, error) {
	if _, ok := rc.Kind.ruleset(); !ok {
		return nil, fmt.Errorf("lab: add NAT host %s: unknown NAT kind %d", name, rc.Kind)
	}
	hns, err := l.addNode(name)
	if err != nil {
		return nil, err
	}
	rns, err := l.addNode(name + "-r")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Host, error) {
		return nil, fmt.Errorf("lab: add NAT host %s: %w", name, err)
	}
	public, err := l.attachPublic(rns, "wan0")
	if err != nil {
		return fail(err)
	}
	l.mu.Lock()
	n := l.nextLAN
	l.nextLAN++
	l.mu.Unlock()
	if n > 254 {
		return fail(errors.New("out of LAN prefixes"))
	}
	lan := netip.AddrFrom4([4]byte{10, 0, byte(n), 1})
	addr := netip.AddrFrom4([4]byte{10, 0, byte(n), 2})
	ctx := l.ctx
	steps := [][]string{
		{"-n", rns, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", hns},
		{"-n", rns, "addr", "add", lan.String() + "/24", "dev", "lan0"},
		{"-n", rns, "link", "set", "lan0", "up"},
		{"-n", hns, "addr", "add", addr.String() + "/24", "dev", "eth0"},
		{"-n", hns, "link", "set", "eth0", "up"},
		{"-n", hns, "route", "add", "default", "via", lan.String()},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return fail(err)
		}
	}
	if err := sysctl(ctx, rns, "net.ipv4.ip_forward", "1"); err != nil {
		return fail(err)
	}
	rs := rc.rulesetFor(addr)
	if _, err := execIn(ctx, rns, rs, "nft", "-f", "-"); err != nil {
		return fail(fmt.Errorf("load nftables ruleset: %w", err))
	}
	r := &Router{
		node:    node{lab: l, name: name + "-r", ns: rns},
		public:  public,
		lan:     lan,
		config:  rc,
		ruleset: rs,
	}
	return &Host{node: node{lab: l, name: name, ns: hns}, addr: addr, router: r}, nil
}

// addNode creates the namespace of a new node with a name unique in l.
func (l *Lab) addNode(name string) (string, error) {
	if !nodeNameRE.MatchString(name) || name == "inet" {
		return "", fmt.Errorf("lab: node name %q: want 1 to 16 lowercase letters, digits or '-', not \"inet\"", name)
	}
	l.mu.Lock()
	dup := l.nodes[name]
	l.nodes[name] = true
	l.mu.Unlock()
	if dup {
		return "", fmt.Errorf("lab: node %q already exists", name)
	}
	return l.addNamespace(name)
}

var nodeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,15}$`)

// addNamespace creates the namespace l.prefix+name with loopback up and
// records it for Close before anything can fail.
func (l *Lab) addNamespace(name string) (string, error) {
	ns := l.prefix + name
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return "", errors.New("lab: closed")
	}
	l.namespaces = append(l.namespaces, ns)
	l.mu.Unlock()
	if err := ip(l.ctx, "netns", "add", ns); err != nil {
		return "", err
	}
	if err := ip(l.ctx, "-n", ns, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	return ns, nil
}

// attachPublic joins namespace ns to the internet router with a veth pair
// created inside the two namespaces (never in the root namespace), gives
// its end ifname the next public address and a default route via the
// internet router, and returns the address.
func (l *Lab) attachPublic(ns, ifname string) (netip.Addr, error) {
	l.mu.Lock()
	addr := l.nextPublic
	l.nextPublic = addr.Next()
	port := fmt.Sprintf("p%d", l.nextPort)
	l.nextPort++
	inet := l.internet.ns
	l.mu.Unlock()
	if !addr.Is4() || addr.As4()[3] == 255 {
		return netip.Addr{}, errors.New("out of public addresses")
	}
	gw := internetGateway.String()
	steps := [][]string{
		{"-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", inet},
		{"-n", ns, "addr", "add", addr.String() + "/32", "dev", ifname},
		{"-n", ns, "link", "set", ifname, "up"},
		{"-n", ns, "route", "add", gw + "/32", "dev", ifname, "scope", "link"},
		{"-n", ns, "route", "add", "default", "via", gw, "dev", ifname},
		{"-n", inet, "addr", "add", gw + "/32", "dev", port},
		{"-n", inet, "link", "set", port, "up"},
		{"-n", inet, "route", "add", addr.String() + "/32", "dev", port},
	}
	for _, s := range steps {
		if err := ip(l.ctx, s...); err != nil {
			return netip.Addr{}, err
		}
	}
	return addr, nil
}

// Close deletes every namespace l created, and with them their veths, rules
// and conntrack tables. It works after failed setup and may be called more
// than once. Processes still running in a namespace keep it alive until
// they exit, but unnamed: stop them before Close.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	nss := l.namespaces
	l.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var errs []error
	for i := len(nss) - 1; i >= 0; i-- {
		if err := deleteNamespace(ctx, nss[i]); err != nil {
			errs = append(errs, err)
		}
	}
	active.mu.Lock()
	delete(active.names, l.cfg.Name)
	active.mu.Unlock()
	return errors.Join(errs...)
}

// deleteNamespace deletes ns, and succeeds if it is already gone.
func deleteNamespace(ctx context.Context, ns string) error {
	err := ip(ctx, "netns", "del", ns)
	if err != nil && !namespaceExists(ns) {
		return nil
	}
	return err
}

func namespaceExists(ns string) bool {
	_, err := os.Stat(netnsDir + ns)
	return err == nil
}

// Sweep deletes every namespace whose name begins with prefix, such as
// NamePrefix to remove everything any lab left behind. It does not spare
// labs that are still running.
func Sweep(ctx context.Context, prefix string) error {
	if prefix == "" {
		return errors.New("lab: sweep: empty prefix")
	}
	names, err := listNamespaces(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range names {
		if strings.HasPrefix(ns, prefix) {
			errs = append(errs, deleteNamespace(ctx, ns))
		}
	}
	return errors.Join(errs...)
}

// sweepStale deletes the namespaces under prefix (NamePrefix + a lab name +
// "-") whose owning process is gone. New calls it so that a crashed run
// does not make the next one fail; concurrent runs of the same test binary
// keep their namespaces.
func sweepStale(ctx context.Context, prefix string) error {
	names, err := listNamespaces(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range names {
		rest, ok := strings.CutPrefix(ns, prefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err == nil && pid != os.Getpid() && processAlive(pid) {
			continue
		}
		// Our own pid here means a lab of ours that was never closed: the
		// name is free again (New checked), so it is stale.
		errs = append(errs, deleteNamespace(ctx, ns))
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

const netnsDir = "/run/netns/"

// listNamespaces returns the names of the named network namespaces.
func listNamespaces(ctx context.Context) ([]string, error) {
	out, err := run(ctx, nil, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		// "name" or "name (id: 3)"
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// Check reports why this machine cannot run a lab: not root, or iproute2
// or nftables missing. It returns nil when it can.
func Check() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces need CAP_SYS_ADMIN)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := map[string]string{"ip": "iproute2", "nft": "nftables"}[tool]
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", tool, pkg))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("lab: missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// ip runs the ip command with args.
func ip(ctx context.Context, args ...string) error {
	_, err := run(ctx, nil, "ip", args...)
	return err
}

// sysctl sets key to value inside namespace ns.
func sysctl(ctx context.Context, ns, key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	_, err := execIn(ctx, ns, "", "sh", "-c", `echo "$1" > "$2"`, "sh", value, path)
	return err
}

// execIn runs name with args inside namespace ns, with stdin as its input.
func execIn(ctx context.Context, ns, stdin, name string, args ...string) ([]byte, error) {
	return run(ctx, strings.NewReader(stdin), "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// run runs a command and returns its output, or an error that quotes the
// command and its stderr.
func run(ctx context.Context, stdin *strings.Reader, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
