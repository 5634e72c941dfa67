package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/enforcer-dev/enforcer/internal/identity/devidp"
	"github.com/enforcer-dev/enforcer/internal/lab"
	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// steps is the demo, in order. To add a step, write a func(*Lab) that runs commands with
// l.Agent / l.Enforcer / l.Reviewer / l.DirectSQL, checks them with l.Expect, registers anything
// it creates with l.Defer, and add it here.
var steps = []step{
	{"Production stand-in: network namespace, PostgreSQL, HTTP services, identity provider", setupProd},
	{"Policy and daemon configuration", writeConfig},
	{"Start the daemon", startDaemon},
	{"Log in", loginAlice},
	{"Agent: HTTP", agentHTTP},
	{"Agent: PostgreSQL without a password", agentRead},
	{"Agent: destructive statements are blocked", agentBlocked},
	{"Agent: writes wait for a reviewer", agentApproval},
	{"Status", showStatus},
	{"Audit: the recorded sessions, a replay, the hash chain", auditSessions},
}

const (
	apiPort   = 8080 // internal-api: the policy allows it
	adminPort = 9090 // an admin console the policy does not name
)

// seedSQL is a small shop: customers with personal data and (test) card numbers, and their
// orders. The card numbers are the issuers' published test numbers, all valid under Luhn.
const seedSQL = `
CREATE TABLE customers (
  id          serial PRIMARY KEY,
  name        text NOT NULL,
  email       text NOT NULL,
  card_number text NOT NULL,
  phone       text,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
  id          serial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers(id),
  amount      numeric(10,2) NOT NULL,
  status      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email, card_number, phone, created_at) VALUES
  ('Ada Lovelace',       'ada.lovelace@example.com',    '4111 1111 1111 1111', '+1 415 555 0134', now() - interval '410 days'),
  ('Grace Hopper',       'grace.hopper@example.com',    '5555 5555 5555 4444', '+1 212 555 0199', now() - interval '380 days'),
  ('Alan Turing',        'alan.turing@example.co.uk',   '3782 822463 10005',   '+44 20 7946 0321', now() - interval '350 days'),
  ('Katherine Johnson',  'kjohnson@example.org',        '4012 8888 8888 1881', '+1 757 555 0110', now() - interval '301 days'),
  ('Edsger Dijkstra',    'edsger@example.nl',           '5105 1051 0510 5100', '+31 20 555 0187', now() - interval '290 days'),
  ('Barbara Liskov',     'liskov@example.edu',          '6011 1111 1111 1117', '+1 617 555 0142', now() - interval '260 days'),
  ('Donald Knuth',       'knuth@example.edu',           '3714 496353 98431',   '+1 650 555 0163', now() - interval '231 days'),
  ('Margaret Hamilton',  'mhamilton@example.com',       '4242 4242 4242 4242', '+1 617 555 0175', now() - interval '200 days'),
  ('Ken Thompson',       'ken@example.com',             '5200 8282 8282 8210', '+1 908 555 0108', now() - interval '188 days'),
  ('Radia Perlman',      'radia.perlman@example.com',   '6011 0009 9013 9424', '+1 978 555 0121', now() - interval '170 days'),
  ('Frances Allen',      'fran.allen@example.com',      '3056 9309 0259 04',   '+1 914 555 0133', now() - interval '151 days'),
  ('John McCarthy',      'jmc@example.edu',             '3530 1113 3330 0000', '+1 650 555 0177', now() - interval '140 days'),
  ('Sophie Wilson',      'sophie.wilson@example.co.uk', '4000 0566 5566 5556', '+44 1223 555 019', now() - interval '122 days'),
  ('Dennis Ritchie',     'dmr@example.com',             '2223 0031 2200 3222', '+1 908 555 0155', now() - interval '99 days'),
  ('Hedy Lamarr',        'hedy@example.at',             '3566 0020 2036 0505', '+43 1 555 0192', now() - interval '80 days'),
  ('Tim Berners-Lee',    'timbl@example.org',           '6200 0000 0000 0005', '+44 20 7946 0455', now() - interval '64 days'),
  ('Shafi Goldwasser',   'shafi@example.edu',           '4000 0000 0000 0002', '+1 617 555 0116', now() - interval '45 days'),
  ('Leslie Lamport',     'lamport@example.com',         '5454 5454 5454 5454', '+1 650 555 0128', now() - interval '30 days'),
  ('Annie Easley',       'annie.easley@example.org',    '3787 344936 71000',   '+1 216 555 0149', now() - interval '12 days'),
  ('Linus Torvalds',     'linus@example.fi',            '4917 6100 0000 0000', '+358 9 555 0170', now() - interval '3 days');
INSERT INTO orders (customer_id, amount, status, created_at)
SELECT (g * 7) % 20 + 1,
       round((12 + (g * 379) % 48800 / 100.0)::numeric, 2),
       (ARRAY['new', 'shipped', 'delivered', 'paid'])[g % 4 + 1],
       now() - g * interval '17 hours'
FROM generate_series(1, 50) g;
`

// setupProd builds the stand-in for production: a network namespace with PostgreSQL and two HTTP
// services, and a development OIDC provider on loopback.
func setupProd(l *Lab) {
	ns, err := lab.NewNetns("enf-lab")
	l.Must(err, "create the network namespace")
	l.Defer("delete network namespace "+ns.Name, ns.Close)
	l.ns, l.prod = ns, ns.PeerAddr.String()
	l.note(func(s *leftovers) { s.Netns = ns.Name })
	l.Say("Network namespace %s plays production at %s (198.18.0.0/15 is reserved for benchmarks:", ns.Name, l.prod)
	l.Say("nothing in this demo leaves the machine).")

	token := randomToken()
	l.WriteFile("internal-api.token", token+"\n", 0o600)
	services := []struct {
		port    int
		handler http.Handler
		what    string
	}{
		{apiPort, internalAPI(token), "the internal API, with a bearer token in internal-api.token (0600, root)"},
		{adminPort, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "admin console: feature flags, user impersonation, billing overrides")
		}), "an admin console (the policy does not name it)"},
	}
	for _, s := range services {
		ln, err := ns.Listen("tcp", net.JoinHostPort(l.prod, fmt.Sprint(s.port)))
		l.Must(err, "listen in the namespace")
		srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		l.Defer(fmt.Sprintf("stop the HTTP service on port %d", s.port), func() error { srv.Close(); return nil })
		l.Say("  http://%s:%d/  %s", l.prod, s.port, s.what)
	}

	ctx, cancel := context.WithTimeout(l.ctx, 60*time.Second)
	defer cancel()
	pg, err := pgtest.StartServer(ctx, pgtest.WithNetns(ns))
	l.interrupted()
	l.Must(err, "start PostgreSQL")
	l.Defer("stop PostgreSQL", pg.Stop)
	l.pg = pg
	l.note(func(s *leftovers) { s.PGDir = pg.Dir })
	l.Must(pg.ExecContext(ctx, seedSQL), "seed the database")
	pw, err := pg.CreateUser(ctx, "agent_rw", false)
	l.Must(err, "create role agent_rw")
	l.Must(pg.ExecContext(ctx, "GRANT SELECT, INSERT, UPDATE, DELETE ON customers, orders TO agent_rw; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO agent_rw"), "grant")
	l.WriteFile("prod-db.password", pw+"\n", 0o600)
	l.Say("  postgresql://%s:%d/postgres  PostgreSQL 15, TLS and SCRAM: customers (%s rows: names, emails,", l.prod, pgtest.Port, l.Query("select count(*)::text from customers"))
	l.Say("      card numbers, phones) and orders (%s rows); role agent_rw may read and write both tables,", l.Query("select count(*)::text from orders"))
	l.Say("      its password is in prod-db.password (0600, root): agents never see it")

	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Users: []devidp.User{
			{Subject: "alice", Email: "alice@example.com", Name: "Alice Example", Groups: []string{"engineering"}},
			{Subject: "carol", Email: "carol@example.com", Name: "Carol Example", Groups: []string{"dba"}},
		},
		PollInterval: time.Second,
	})
	l.Must(err, "start the identity provider")
	l.Defer("stop the identity provider", idp.Close)
	l.idp = idp
	l.Say("  %s  a development OpenID Connect provider: alice (engineering), carol (dba)", idp.Issuer())
	l.agentDSN = fmt.Sprintf("host=%s port=%d dbname=postgres user=agent sslmode=disable", l.prod, pgtest.Port)
}

// writeConfig writes the policy and the daemon's configuration and checks the policy with the CLI.
func writeConfig(l *Lab) {
	l.Say("Working directory %s; every command below runs there, with", l.dir)
	l.Say("ENFORCER_SOCKET=%s", l.socket)
	// The shipped example policy, pointed at this lab's addresses and files.
	example, err := os.ReadFile("examples/policy.yaml")
	l.Must(err, "read the example policy")
	policy := strings.NewReplacer(
		"198.18.0.2", l.prod,
		"/etc/enforcer/secrets/prod-db", filepath.Join(l.dir, "prod-db.password"),
		"/etc/enforcer/secrets/internal-api", filepath.Join(l.dir, "internal-api.token"),
		"/etc/enforcer/prod-db-ca.pem", l.pg.CAFile,
	).Replace(string(example))
	l.WriteFile("policy.yaml", policy, 0o644)
	config := fmt.Sprintf(`policy: policy.yaml
state_dir: state
socket: %s
bpf_pin_dir: /sys/fs/bpf/enforcer-lab
cgroup: enforcer-lab.slice
nft_table: enforcer_lab
proxy_port: 700
metrics: 127.0.0.1:9464
identity: {issuer: %q, client_id: %q}
`, l.socket, l.idp.Issuer(), l.idp.ClientID())
	l.cfgPath = l.WriteFile("enforcer.yaml", config, 0o644)
	l.ShowFile("policy.yaml")
	l.ShowFile("enforcer.yaml")
	r := l.Enforcer("policy", "check", "policy.yaml")
	l.Expect(r.Code == 0, "the policy is valid")
}

// startDaemon starts the daemon in the background and waits for its control socket.
func startDaemon(l *Lab) {
	// Registered before the daemon starts, so it runs after the daemon is stopped.
	l.Defer("enforcer uninstall --config enforcer.yaml (detach and unpin the programs, remove the cgroups)", func() error {
		return l.uninstall(l.cfgPath)
	})
	if _, err := os.Stat("/sys/fs/bpf/enforcer-lab"); err == nil {
		l.Say("An earlier lab run was killed before it could clean up; removing what it left:")
		r := l.Enforcer("uninstall", "--config", "enforcer.yaml")
		l.Expect(r.Code == 0, "leftovers removed")
	}
	logPath := filepath.Join(l.dir, "daemon.log")
	logf, err := os.Create(logPath)
	l.Must(err, "daemon log")
	defer logf.Close()
	c := Cmd{Args: []string{l.bin, "daemon", "--config", "enforcer.yaml"}, Show: "enforcer daemon --config enforcer.yaml 2>daemon.log"}
	l.showCmd(c, " &")
	cmd := exec.Command(l.bin, c.Args[1:]...)
	cmd.Dir = l.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C at the terminal reaches the demo, which stops the daemon
	// in order during the teardown.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	l.Must(cmd.Start(), "start the daemon")
	l.daemon, l.daemonDone = cmd, make(chan struct{})
	l.note(func(s *leftovers) { s.DaemonPID = cmd.Process.Pid })
	go func() { cmd.Wait(); close(l.daemonDone) }()
	l.Defer(fmt.Sprintf("stop the daemon (pid %d)", cmd.Process.Pid), func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-l.daemonDone:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-l.daemonDone
		}
		b, _ := os.ReadFile(logPath)
		l.daemonLog = string(b)
		return nil
	})
	up := l.waitFor(20*time.Second, func() bool {
		select {
		case <-l.daemonDone:
			return false
		default:
		}
		c, err := net.Dial("unix", l.socket)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	l.interrupted()
	l.Expect(up, "the daemon is up: programs attached, proxy on 127.0.0.1:700, control socket ready")
	l.ShowFile("daemon.log")
}

var deviceCode = regexp.MustCompile(`enter the code (\S+)`)

// login runs `enforcer login` and approves its device code at the IdP as subject, the way that
// person would in a browser.
func (l *Lab) login(c Cmd, subject string) Result {
	var approveErr error
	c.OnLine = func(line string) string {
		m := deviceCode.FindStringSubmatch(line)
		if m == nil {
			return ""
		}
		if approveErr = l.idp.ApproveDevice(m[1], subject); approveErr != nil {
			return fmt.Sprintf("(could not approve the code as %s: %v)", subject, approveErr)
		}
		return fmt.Sprintf("(%s opens the page and approves code %s; the lab does it for her)", subject, m[1])
	}
	r := l.Run(c)
	l.Must(approveErr, "approve the device code")
	return r
}

func loginAlice(l *Lab) {
	l.Say("Alice (engineering) logs in. The CLI asks the daemon how (issuer, client id) and runs the")
	l.Say("OAuth device flow; the daemon verifies the ID token and binds the session to her Unix user.")
	r := l.login(l.aliceCmd("login"), "alice")
	l.Expect(r.Code == 0 && r.Has("logged in as alice@example.com", "engineering"), "alice is logged in, with her groups from the IdP")
	r = l.Run(l.aliceCmd("logins"))
	l.Expect(r.Code == 0 && r.Has("alice", "active"), "her session is listed")
}

func agentHTTP(l *Lab) {
	l.Say("Every agent command runs under `enforcer run`: the kernel sends each connection it makes")
	l.Say("to the enforcer's proxy, which applies the policy as alice.")
	api := fmt.Sprintf("http://%s:%d/", l.prod, apiPort)
	admin := fmt.Sprintf("http://%s:%d/", l.prod, adminPort)
	r := l.Agent("curl", "-sS", "--max-time", "5", api)
	l.Expect(r.Code == 0 && r.Has(`"internal-api"`), "internal-api answered through the proxy, which added the API's token")
	l.Say("The API's answers reach the agent masked, as database results do:")
	r = l.Agent("curl", "-sS", "--max-time", "5", api+"v1/customers/1")
	l.Expect(r.Code == 0 && r.Has(`"name": "Ada Lovelace"`) && !r.Has("ada.lovelace@example.com") && !r.Has("4111 1111 1111 1111"),
		"the email and the card number in the JSON body are masked")
	r = l.Agent("curl", "-sS", "--max-time", "5", "-X", "DELETE", api+"v1/customers/1")
	l.Expect(r.Has("api-no-deletes"), "a DELETE is refused by its rule before the API sees it")
	l.Say("Over https:// the proxy answers the agent's TLS itself, with a certificate for the name it")
	l.Say("asked for from this host's agent CA (`enforcer agent-ca` prints it; `enforcer run` makes")
	l.Say("curl, OpenSSL, Python, Node and git trust it), so HTTPS is judged and masked the same way:")
	r = l.Agent("curl", "-sS", "--max-time", "5", fmt.Sprintf("https://%s/v1/customers/1", l.prod))
	l.Expect(r.Code == 0 && r.Has(`"name": "Ada Lovelace"`) && !r.Has("ada.lovelace@example.com") && !r.Has("4111 1111 1111 1111"),
		"the same masked answer over HTTPS")
	l.Say("Without the proxy's token the API refuses the same request: the agent never had it.")
	r = l.Run(Cmd{Args: []string{"curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", api + "v1/customers/1"}})
	l.Expect(r.Has("401"), "a direct request without the token gets 401")
	r = l.Agent("curl", "-sS", "--max-time", "5", admin)
	l.Expect(r.Code != 0 && !r.Has("admin console"), "the admin console is refused: no target in the policy names it")
	l.Say("Outside enforcement the same port answers, so it was the policy, not the network:")
	r = l.Run(Cmd{Args: []string{"curl", "-sS", "--max-time", "5", admin}})
	l.Expect(r.Code == 0 && r.Has("admin console"), "reachable directly")
	r = l.Agent("bash", "-c", fmt.Sprintf("echo hello > /dev/udp/%s/9999", l.prod))
	l.Expect(r.Code != 0, "UDP other than DNS to the policy's resolvers is refused by the kernel")
	l.Say("The daemon logs each connection with the process and the person behind it:")
	r = l.Run(Cmd{Args: []string{"grep", "-E", `msg="?connection`, "daemon.log"}})
	l.Expect(r.Has("comm=curl", "subject=alice", "target=internal-api", "connection denied"), "the allowed connection names its process and person; the refused one says why")
}

func agentRead(l *Lab) {
	l.Say("The agent runs psql with no password and any user name; the proxy logs in upstream as")
	l.Say("agent_rw with the password only the daemon can read, over TLS checked against the server's CA.")
	r := l.Agent("psql", l.agentDSN, "-c", "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()")
	l.Expect(r.Code == 0 && r.Has("agent_rw", " t"), "the session is agent_rw's, over TLS")
	q := "select id, name, email, card_number from customers order by id limit 5"
	r = l.Agent("psql", l.agentDSN, "-c", q)
	l.Expect(r.Code == 0 && r.Has("(5 rows)"), "reads are allowed (default: allow_reads)")
	l.Expect(!r.Has("4111 1111 1111 1111") && !r.Has("ada.lovelace@example.com") && r.Has("1111"),
		"card numbers and emails reach the agent masked (the detectors are on by default)")
	l.Say("What the agent would otherwise see: the same query over a direct connection, outside")
	l.Say("enforcement, as the database superuser:")
	r = l.DirectSQL(q)
	l.Expect(r.Code == 0 && r.Has("4111 1111 1111 1111", "ada.lovelace@example.com"), "the direct connection shows the values in clear")
}

func agentBlocked(l *Lab) {
	counts := "select (select count(*) from customers) as customers, (select count(*) from orders) as orders"
	customers, orders := l.Query("select count(*)::text from customers"), l.Query("select count(*)::text from orders")
	r := l.Agent("psql", l.agentDSN, "-c", "DROP TABLE customers")
	l.Expect(r.Code != 0 && r.Has("no-destructive-ddl", "destructive DDL is not allowed"), "DROP TABLE is blocked by rule no-destructive-ddl, with its message")
	r = l.Agent("psql", l.agentDSN, "-c", "DELETE FROM orders")
	l.Expect(r.Code != 0 && r.Has("no-unbounded-writes", "writes must name the rows"), "an unbounded DELETE is blocked by rule no-unbounded-writes")
	l.Say("Neither statement reached the server. From a direct superuser connection:")
	r = l.DirectSQL(counts)
	l.Expect(r.Code == 0 && l.Query("select count(*)::text from customers") == customers && l.Query("select count(*)::text from orders") == orders,
		"the tables are intact: %s customers, %s orders", customers, orders)
}

// pendingApproval waits for a pending approval request and returns its id.
func (l *Lab) pendingApproval() string {
	var id string
	l.waitFor(15*time.Second, func() bool {
		out, err := exec.Command(l.bin, "approvals", "--json", "--socket", l.socket).Output()
		if err != nil {
			return false
		}
		var reqs []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		}
		if json.Unmarshal(out, &reqs) != nil {
			return false
		}
		for _, r := range reqs {
			if r.State == "pending" {
				id = r.ID
				return true
			}
		}
		return false
	})
	l.interrupted()
	if id == "" {
		l.Fatalf("no approval request appeared within 15s")
	}
	return id
}

func agentApproval(l *Lab) {
	l.Say("Carol (dba) reviews writes. She logs in from her own Unix account (uid %d here):", reviewerUID)
	r := l.login(l.reviewerCmd("login"), "carol")
	l.Expect(r.Code == 0 && r.Has("logged in as carol@example.com", "dba"), "carol is logged in")

	l.Say("The agent sends a bounded UPDATE: rule writes-need-review holds it until a DBA decides.")
	update := "UPDATE orders SET status = 'refunded' WHERE id = 7"
	c := l.aliceCmd("run", "--", "psql", l.agentDSN, "-c", update)
	c.Timeout = 45 * time.Second
	job := l.Start(c)
	id := l.pendingApproval()
	l.Say("psql is waiting; so far it printed:")
	job.Flush()
	r = l.Enforcer("approvals")
	l.Expect(r.Code == 0 && r.Has(id, update, "alice"), "the request shows who asks, from which process, and the exact statement")
	l.Say("Alice cannot approve her own request:")
	r = l.Run(l.aliceCmd("approve", id))
	l.Expect(r.Code != 0 && r.Has("own request"), "self-approval is refused")
	r = l.Reviewer("approve", id, "--reason", "refund ticket SUP-4411")
	l.Expect(r.Code == 0 && r.Has("approved"), "carol approves")
	r = job.Wait()
	l.Expect(r.Code == 0 && r.Has("UPDATE 1"), "exactly the reviewed statement ran: UPDATE 1")
	l.Expect(l.Query("select status from orders where id = 7") == "refunded", "order 7 is refunded in the database")

	l.Say("A second write, which carol denies with a reason the agent gets to read:")
	deny := "UPDATE orders SET amount = 0 WHERE id = 12"
	amount := l.Query("select amount::text from orders where id = 12")
	c = l.aliceCmd("run", "--", "psql", l.agentDSN, "-c", deny)
	c.Timeout = 45 * time.Second
	job = l.Start(c)
	id = l.pendingApproval()
	r = l.Reviewer("deny", id, "--reason", "zeroing an order needs a finance ticket")
	l.Expect(r.Code == 0 && r.Has("denied"), "carol denies")
	r = job.Wait()
	l.Expect(r.Code != 0 && r.Has("zeroing an order needs a finance ticket") && !r.Has("UPDATE 1"), "the agent sees the reason; nothing ran")
	l.Expect(l.Query("select amount::text from orders where id = 12") == amount, "order 12 still costs %s", amount)
}

func showStatus(l *Lab) {
	r := l.Enforcer("status")
	l.Expect(r.Code == 0, "status answers")
}

// auditSessions lists what the demo recorded, replays the agent's masked read and its blocked
// session, and verifies the log's hash chain.
func auditSessions(l *Lab) {
	l.Say("Every session was recorded as it happened (masked), in a hash-chained log only root can read.")
	r := l.Enforcer("sessions", "--config", l.cfgPath)
	l.Expect(r.Code == 0 && r.Has("prod-db", "alice"), "the agent's sessions are listed with who ran them")
	js, _ := exec.Command(l.bin, "sessions", "--config", l.cfgPath, "--json").Output()
	var sessions []struct {
		ID         string `json:"id"`
		Target     string `json:"target"`
		Statements int    `json:"statements"`
		Blocked    int    `json:"blocked"`
		Held       int    `json:"held"`
	}
	json.Unmarshal(js, &sessions)
	// The agent's second psql session is the read of customers (the first asked for its user).
	var reads []string
	id := ""
	for _, s := range sessions {
		if s.Target == "prod-db" && s.Statements > 0 && s.Blocked == 0 && s.Held == 0 {
			reads = append(reads, s.ID)
		}
		if s.Target == "prod-db" && s.Blocked > 0 && id == "" {
			id = s.ID
		}
	}
	l.Expect(len(reads) >= 2, "the agent's reads were recorded")
	if len(reads) >= 2 {
		r = l.Enforcer("replay", reads[1], "--config", l.cfgPath)
		l.Expect(r.Code == 0 && r.Has("customers", "(5 rows)") && !r.Has("4111 1111 1111 1111") && !r.Has("ada.lovelace@example.com"),
			"the replay shows the read and its result as the agent saw it: masked")
	}
	l.Expect(id != "", "a session with a blocked statement was recorded")
	r = l.Enforcer("replay", id, "--config", l.cfgPath)
	l.Expect(r.Code == 0 && r.Has("DROP TABLE", "no-destructive-ddl"), "the replay shows the blocked statement and the rule")
	r = l.Enforcer("record", "verify", "--config", l.cfgPath)
	l.Expect(r.Code == 0, "the hash chain verifies: no record was edited, removed or reordered")
}

// randomToken is the lab API's bearer token.
func randomToken() string {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "lab_" + hex.EncodeToString(b)
}

// internalAPI is the lab's internal API: it answers requests that carry its token, with a
// customer record holding personal data, and refuses the rest with 401.
func internalAPI(token string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, `{"error": "a valid bearer token is required"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/v1/customers/1":
			fmt.Fprintln(w, `{"id": 1, "name": "Ada Lovelace", "email": "ada.lovelace@example.com", "card_number": "4111 1111 1111 1111"}`)
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		default:
			fmt.Fprintln(w, `{"service": "internal-api", "status": "ok", "open_incidents": 2}`)
		}
	})
}
