/*
 * node_config: defaults, every value type, bounds, error messages with
 * file:line, listen and CIDR parsing, trusted() and local_domain().
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/rm_error.h"
#include "node/node_config.h"

static char errbuf[512];

static int
load(struct node_config *cfg, const char *text)
{
    errbuf[0] = '\0';
    return node_config_load_string(cfg, text, "t.conf", errbuf, sizeof(errbuf));
}

/* Loading text must fail with an error that contains want. */
static void
expect_error(const char *text, const char *want)
{
    struct node_config cfg;
    int r = load(&cfg, text);

    if (r != RM_E_CONFIG || strstr(errbuf, want) == NULL)
        fail_msg("text:\n%s\nwant error containing \"%s\", got %d \"%s\"", text,
                 want, r, errbuf);
    /* cfg is cleaned up on error */
    assert_null(cfg.datadir);
    assert_int_equal(cfg.ndomains, 0);
}

static void
test_defaults(void **state)
{
    struct node_config cfg;
    char cwd[4096], want[4200];

    (void)state;
    assert_int_equal(node_config_load(&cfg, NULL, errbuf, sizeof(errbuf)), 0);
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    snprintf(want, sizeof(want), "%s/relaymesh-data", cwd);
    assert_string_equal(cfg.datadir, want);
    snprintf(want, sizeof(want), "%s/relaymesh-data/control.sock", cwd);
    assert_string_equal(cfg.control_socket, want);
    assert_null(cfg.path);
    assert_non_null(cfg.hostname);
    assert_true(strlen(cfg.hostname) > 0);
    assert_string_equal(cfg.user, "relaymesh");
    assert_string_equal(cfg.log_level, "info");
    assert_int_equal(cfg.nlisten, 1);
    assert_string_equal(cfg.listen[0].text, "127.0.0.1:2525");
    assert_int_equal(cfg.listen[0].addr.ss_family, AF_INET);
    assert_int_equal(
        ntohs(((struct sockaddr_in *)&cfg.listen[0].addr)->sin_port), 2525);
    assert_int_equal(cfg.ndomains, 1);
    assert_string_equal(cfg.domains[0], "localhost");
    assert_int_equal(cfg.nmynetworks, 2);
    assert_int_equal(cfg.mynetworks[0].family, AF_INET);
    assert_int_equal(cfg.mynetworks[0].prefix, 8);
    assert_int_equal(cfg.mynetworks[1].family, AF_INET6);
    assert_int_equal(cfg.mynetworks[1].prefix, 128);
    assert_string_equal(cfg.postmaster, "postmaster@localhost");
    assert_string_equal(cfg.banner, "relaymesh ESMTP");
    assert_int_equal(cfg.bare_lf, NODE_BARE_REJECT);
    assert_int_equal(cfg.max_command_line, 512);
    assert_int_equal(cfg.max_text_line, 1000);
    assert_int_equal(cfg.max_recipients, 1000);
    assert_int_equal(cfg.max_message_size, 26214400);
    assert_int_equal(cfg.max_header_size, 102400);
    assert_int_equal(cfg.max_errors, 10);
    assert_int_equal(cfg.max_received, 50);
    assert_int_equal(cfg.max_sessions, 10000);
    assert_int_equal(cfg.timeout_command, 300);
    assert_int_equal(cfg.timeout_data, 600);
    assert_int_equal(cfg.timeout_shutdown, 30);
    assert_int_equal(cfg.map_size_max, 0);
    node_config_cleanup(&cfg);
    assert_null(cfg.datadir);
}

static void
test_every_type(void **state)
{
    struct node_config cfg;
    static const char text[] =
        "; comment\n"
        "# another\n"
        "[node]\n"
        "hostname = mx1.example.org\n"
        "datadir = /var/lib/relaymesh\n"
        "user = mail\n"
        "log_level = debug\n"
        "[smtp]\n"
        "listen = 0.0.0.0:25, [::1]:2525 ,[::]:587\n"
        "domains = Example.ORG, example.net., example.org\n"
        "mynetworks = 10.1.2.3/8, 192.0.2.7, 2001:db8::1/32\n"
        "banner = hello there ; inline comment\n"
        "bare_lf = normalise\n"
        "[limits]\n"
        "max_message_size = 10m\n"
        "max_header_size = 64k\n"
        "max_recipients = 100\n"
        "max_errors = 3\n"
        "timeout_command = 1\n"
        "timeout_shutdown = 0\n"
        "[store]\n"
        "map_size_max = 2G\n";

    (void)state;
    assert_int_equal(load(&cfg, text), 0);
    assert_string_equal(cfg.hostname, "mx1.example.org");
    assert_string_equal(cfg.datadir, "/var/lib/relaymesh");
    assert_string_equal(cfg.control_socket, "/var/lib/relaymesh/control.sock");
    assert_string_equal(cfg.user, "mail");
    assert_string_equal(cfg.log_level, "debug");
    assert_int_equal(cfg.nlisten, 3);
    assert_string_equal(cfg.listen[0].text, "0.0.0.0:25");
    assert_string_equal(cfg.listen[1].text, "[::1]:2525");
    assert_int_equal(cfg.listen[1].addr.ss_family, AF_INET6);
    assert_int_equal(cfg.listen[1].addrlen, sizeof(struct sockaddr_in6));
    assert_int_equal(
        ntohs(((struct sockaddr_in6 *)&cfg.listen[2].addr)->sin6_port), 587);
    /* lower-cased, trailing dot gone, duplicates dropped */
    assert_int_equal(cfg.ndomains, 2);
    assert_string_equal(cfg.domains[0], "example.org");
    assert_string_equal(cfg.domains[1], "example.net");
    assert_string_equal(cfg.postmaster, "postmaster@example.org");
    assert_int_equal(cfg.nmynetworks, 3);
    /* host bits masked */
    assert_memory_equal(cfg.mynetworks[0].addr, "\x0a\x00\x00\x00", 4);
    assert_int_equal(cfg.mynetworks[1].prefix, 32);
    assert_int_equal(cfg.mynetworks[2].prefix, 32);
    assert_string_equal(cfg.banner, "hello there");
    assert_int_equal(cfg.bare_lf, NODE_BARE_NORMALISE);
    assert_int_equal(cfg.max_message_size, 10 * 1024 * 1024);
    assert_int_equal(cfg.max_header_size, 64 * 1024);
    assert_int_equal(cfg.max_recipients, 100);
    assert_int_equal(cfg.max_errors, 3);
    assert_int_equal(cfg.timeout_command, 1);
    assert_int_equal(cfg.timeout_shutdown, 0);
    assert_int_equal(cfg.map_size_max, (uint64_t)2 << 30);
    node_config_cleanup(&cfg);
}

static void
test_list_continuation(void **state)
{
    struct node_config cfg;

    (void)state;
    assert_int_equal(load(&cfg, "[smtp]\n"
                                "domains = a.example\n"
                                "  b.example, c.example\n"
                                "domains = d.example\n"),
                     0);
    assert_int_equal(cfg.ndomains, 4);
    assert_string_equal(cfg.domains[3], "d.example");
    node_config_cleanup(&cfg);
}

static void
test_relative_paths(void **state)
{
    struct node_config cfg;
    char cwd[4096], want[4200];

    (void)state;
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(load(&cfg, "[node]\ndatadir = ./a/b\n"
                                "control_socket = ctl.sock\n"),
                     0);
    snprintf(want, sizeof(want), "%s/a/b", cwd);
    assert_string_equal(cfg.datadir, want);
    snprintf(want, sizeof(want), "%s/ctl.sock", cwd);
    assert_string_equal(cfg.control_socket, want);
    node_config_cleanup(&cfg);
}

static void
test_bounds(void **state)
{
    (void)state;
    /* RFC 5321 §4.5.3.1 minimums */
    expect_error("[limits]\nmax_command_line = 511\n",
                 "t.conf:2: limits.max_command_line: 511 is out of range "
                 "(512 to");
    expect_error("[limits]\nmax_text_line = 999\n", "t.conf:2:");
    expect_error("[limits]\nmax_recipients = 99\n", "out of range");
    expect_error("[limits]\nmax_errors = 0\n", "out of range");
    expect_error("[limits]\nmax_sessions = 1000001\n", "out of range");
    expect_error("[limits]\ntimeout_command = 86401\n", "out of range");
    expect_error("[limits]\nmax_message_size = 99999999999999999999999\n",
                 "too large");
    expect_error("[store]\nmap_size_max = 1x\n", "expected a number");
    expect_error("[limits]\nmax_errors = 1k\n", "expected a number");
    expect_error("[limits]\nmax_errors = -1\n", "expected a number");
    expect_error("[limits]\nmax_errors =\n", "expected a number");
    expect_error("[limits]\nmax_header_size = 1m\nmax_message_size = 64k\n",
                 "max_header_size");
}

static void
test_errors_with_lines(void **state)
{
    (void)state;
    expect_error("[node]\nuser = x\n\n[smtp]\nlisten_on = 1.2.3.4:25\n",
                 "t.conf:5: unknown key \"listen_on\" in [smtp]");
    expect_error("[nodes]\nuser = x\n", "t.conf:1: unknown section [nodes]");
    expect_error("[empty]\n", "t.conf:1: unknown section [empty]");
    expect_error("user = x\n", "t.conf:1: \"user\" is outside a section");
    expect_error("[node]\nthis is not a key\n", "t.conf:2: syntax error");
    expect_error("[node\n", "t.conf:1: syntax error");
    expect_error("[node]\nuser = a\nuser = b\n",
                 "t.conf:3: node.user is given twice");
    expect_error("[node]\nlog_level = loud\n",
                 "t.conf:2: node.log_level: expected error, warn, info or "
                 "debug");
    expect_error("[smtp]\nbare_lf = maybe\n", "expected reject or normalise");
    expect_error("[node]\nhostname = bad host\n", "not a valid host name");
    expect_error("[smtp]\nbanner = \n", "must not be empty");
    expect_error("[smtp]\npostmaster = nobody\n", "expected an address");
    expect_error("[smtp]\ndomains = ,\n", "at least one local domain");
    expect_error("[smtp]\ndomains = exa mple.org\n", "not a valid domain");
    /* the first of two errors is reported */
    expect_error("[node]\nfoo = 1\nbar = 2\n", "t.conf:2:");
}

static void
test_long_line(void **state)
{
    char text[600];

    (void)state;
    memset(text, 'a', sizeof(text));
    memcpy(text, "[smtp]\ndomains = ", 17);
    text[sizeof(text) - 2] = '\n';
    text[sizeof(text) - 1] = '\0';
    expect_error(text, "t.conf:2: line too long");
}

static void
test_listen(void **state)
{
    struct node_config cfg;

    (void)state;
    expect_error("[smtp]\nlisten = localhost:25\n", "numeric address");
    expect_error("[smtp]\nlisten = 127.0.0.1\n", "expected host:port");
    expect_error("[smtp]\nlisten = 127.0.0.1:65536\n", "bad port");
    expect_error("[smtp]\nlisten = 127.0.0.1:x\n", "bad port");
    expect_error("[smtp]\nlisten = ::1:25\n", "brackets");
    expect_error("[smtp]\nlisten = [::1]25\n", "[IPv6]:port");
    expect_error("[smtp]\nlisten = [1.2.3.4]:25\n", "numeric address");
    expect_error("[smtp]\nlisten = 1.1.1.1:1,1.1.1.1:2,1.1.1.1:3,1.1.1.1:4,"
                 "1.1.1.1:5,1.1.1.1:6,1.1.1.1:7,1.1.1.1:8,1.1.1.1:9\n",
                 "too many entries");
    assert_int_equal(load(&cfg, "[smtp]\nlisten = *:2525, [fe80::1]:0\n"), 0);
    assert_int_equal(cfg.nlisten, 2);
    assert_int_equal(cfg.listen[0].addr.ss_family, AF_INET);
    assert_int_equal(
        ((struct sockaddr_in *)&cfg.listen[0].addr)->sin_addr.s_addr,
        htonl(INADDR_ANY));
    node_config_cleanup(&cfg);
}

static void
test_bad_cidr(void **state)
{
    (void)state;
    expect_error("[smtp]\nmynetworks = 10.0.0.0/33\n", "bad prefix length");
    expect_error("[smtp]\nmynetworks = ::/129\n", "bad prefix length");
    expect_error("[smtp]\nmynetworks = 10.0.0.0/\n", "bad prefix length");
    expect_error("[smtp]\nmynetworks = 10.0.0.0/-1\n", "bad prefix length");
    expect_error("[smtp]\nmynetworks = 10.0.0.0/8x\n", "bad prefix length");
    expect_error("[smtp]\nmynetworks = 10.0.0/8\n", "is not a network");
    expect_error("[smtp]\nmynetworks = example.org\n", "is not a network");
}

static struct sockaddr_storage
sa(const char *addr)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, addr, &s4->sin_addr), 1);
    }
    return ss;
}

#define TRUSTED(cfg, a)                                                        \
    ({                                                                         \
        struct sockaddr_storage s_ = sa(a);                                    \
        node_config_trusted((cfg), (struct sockaddr *)&s_);                    \
    })

static void
test_trusted(void **state)
{
    struct node_config cfg;

    (void)state;
    assert_int_equal(node_config_load(&cfg, NULL, errbuf, sizeof(errbuf)), 0);
    assert_true(TRUSTED(&cfg, "127.0.0.1"));
    assert_true(TRUSTED(&cfg, "127.255.0.9"));
    assert_false(TRUSTED(&cfg, "128.0.0.1"));
    assert_true(TRUSTED(&cfg, "::1"));
    assert_false(TRUSTED(&cfg, "::2"));
    assert_true(TRUSTED(&cfg, "::ffff:127.0.0.1")); /* v4-mapped */
    assert_false(TRUSTED(&cfg, "::ffff:10.0.0.1"));
    assert_false(node_config_trusted(&cfg, NULL));
    node_config_cleanup(&cfg);

    assert_int_equal(load(&cfg, "[smtp]\nmynetworks = 192.0.2.128/25, "
                                "2001:db8:ab00::/41, 198.51.100.7\n"),
                     0);
    assert_true(TRUSTED(&cfg, "192.0.2.200"));
    assert_false(TRUSTED(&cfg, "192.0.2.127"));
    assert_true(TRUSTED(&cfg, "::ffff:192.0.2.129"));
    assert_true(TRUSTED(&cfg, "2001:db8:ab7f:ffff::1"));
    assert_false(TRUSTED(&cfg, "2001:db8:ab80::1"));
    assert_true(TRUSTED(&cfg, "198.51.100.7"));
    assert_false(TRUSTED(&cfg, "198.51.100.8"));
    assert_false(TRUSTED(&cfg, "127.0.0.1")); /* replaced the default */
    node_config_cleanup(&cfg);

    assert_int_equal(load(&cfg, "[smtp]\nmynetworks = 0.0.0.0/0\n"), 0);
    assert_true(TRUSTED(&cfg, "203.0.113.9"));
    assert_false(TRUSTED(&cfg, "2001:db8::1"));
    node_config_cleanup(&cfg);

    assert_int_equal(load(&cfg, "[smtp]\nmynetworks =\n"), 0);
    assert_int_equal(cfg.nmynetworks, 0);
    assert_false(TRUSTED(&cfg, "127.0.0.1"));
    node_config_cleanup(&cfg);
}

static void
test_local_domain(void **state)
{
    struct node_config cfg;

    (void)state;
    assert_int_equal(load(&cfg, "[smtp]\ndomains = example.org, LOCALHOST\n"),
                     0);
    assert_true(node_config_local_domain(&cfg, "example.org", 11));
    assert_true(node_config_local_domain(&cfg, "EXAMPLE.org", 11));
    assert_true(node_config_local_domain(&cfg, "example.org.", 12));
    assert_true(node_config_local_domain(&cfg, "localhost", 9));
    assert_false(node_config_local_domain(&cfg, "example.org.uk", 14));
    assert_false(node_config_local_domain(&cfg, "example.or", 10));
    assert_false(node_config_local_domain(&cfg, ".", 1));
    assert_false(node_config_local_domain(&cfg, "", 0));
    assert_false(node_config_local_domain(&cfg, NULL, 0));
    /* len, not NUL, bounds the name */
    assert_true(node_config_local_domain(&cfg, "example.orgXYZ", 11));
    node_config_cleanup(&cfg);
}

static void
test_file_and_dump(void **state)
{
    struct node_config cfg, again;
    char path[] = "/tmp/test_config_XXXXXX";
    char dump[] = "/tmp/test_config_dump_XXXXXX";
    int fd = mkstemp(path), dfd = mkstemp(dump);
    static const char text[] = "[smtp]\ndomains = a.example\n"
                               "mynetworks = 10.0.0.0/8, ::1\n"
                               "bare_lf = normalise\n"
                               "[limits]\nmax_errors = 7\n";

    (void)state;
    assert_true(fd >= 0 && dfd >= 0);
    assert_int_equal(write(fd, text, sizeof(text) - 1),
                     (ssize_t)sizeof(text) - 1);
    close(fd);
    assert_int_equal(node_config_load(&cfg, path, errbuf, sizeof(errbuf)), 0);
    assert_string_equal(cfg.path, path);
    assert_int_equal(cfg.max_errors, 7);
    node_config_dump(&cfg, dfd);
    close(dfd);
    /* The dump is itself a valid config with the same values. */
    assert_int_equal(node_config_load(&again, dump, errbuf, sizeof(errbuf)), 0);
    assert_string_equal(again.hostname, cfg.hostname);
    assert_string_equal(again.datadir, cfg.datadir);
    assert_string_equal(again.control_socket, cfg.control_socket);
    assert_string_equal(again.domains[0], "a.example");
    assert_int_equal(again.nmynetworks, 2);
    assert_int_equal(again.mynetworks[1].prefix, 128);
    assert_int_equal(again.bare_lf, NODE_BARE_NORMALISE);
    assert_int_equal(again.max_errors, 7);
    assert_int_equal(again.max_message_size, cfg.max_message_size);
    node_config_cleanup(&again);
    node_config_cleanup(&cfg);
    unlink(path);
    unlink(dump);

    assert_int_equal(node_config_load(&cfg, "/nonexistent/relaymesh.conf",
                                      errbuf, sizeof(errbuf)),
                     RM_E_CONFIG);
    assert_non_null(strstr(errbuf, "/nonexistent/relaymesh.conf: cannot "
                                   "open"));
}

/* [mesh] ack_replicas: off by default, at most replicas. */
static void
test_ack_replicas(void **state)
{
    struct node_config cfg;

    (void)state;
    assert_int_equal(
        node_config_load_string(&cfg, "", NULL, errbuf, sizeof(errbuf)), 0);
    assert_int_equal(cfg.mesh_ack_replicas, 0);
    assert_int_equal(cfg.mesh_ack_timeout, 10);
    node_config_cleanup(&cfg);
    assert_int_equal(node_config_load_string(&cfg,
                                             "[mesh]\nreplicas = 3\n"
                                             "ack_replicas = 2\n"
                                             "ack_timeout = 2s\n",
                                             NULL, errbuf, sizeof(errbuf)),
                     0);
    assert_int_equal(cfg.mesh_ack_replicas, 2);
    assert_int_equal(cfg.mesh_ack_timeout, 2);
    node_config_cleanup(&cfg);
    assert_int_equal(node_config_load_string(&cfg,
                                             "[mesh]\nreplicas = 1\n"
                                             "ack_replicas = 2\n",
                                             "t.conf", errbuf, sizeof(errbuf)),
                     RM_E_CONFIG);
    assert_non_null(strstr(errbuf, "t.conf: mesh.ack_replicas (2) is larger "
                                   "than mesh.replicas (1)"));
    assert_int_equal(node_config_load_string(&cfg, "[mesh]\nack_timeout = 0\n",
                                             "t.conf", errbuf, sizeof(errbuf)),
                     RM_E_CONFIG);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_type),
        cmocka_unit_test(test_list_continuation),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_errors_with_lines),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_bad_cidr),
        cmocka_unit_test(test_trusted),
        cmocka_unit_test(test_local_domain),
        cmocka_unit_test(test_file_and_dump),
        cmocka_unit_test(test_ack_replicas),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
