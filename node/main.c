/*
 * relaymesh: one binary. `relaymesh serve` runs a node; every other
 * subcommand talks to a running node over its control socket.
 */
#include <stdio.h>
#include <string.h>

#include "node/node.h"

static void
usage(FILE *f)
{
    fprintf(
        f,
        "usage: relaymesh COMMAND [options]\n"
        "\n"
        "  serve [-c FILE] [--check] [--log-level LEVEL]\n"
        "                       run a node (no -c: embedded default)\n"
        "  status               the running node: listeners, counters\n"
        "  user add|del|passwd ADDRESS\n"
        "  user list            store users\n"
        "  mailbox list ADDRESS messages in a mailbox\n"
        "  mailbox cat ADDRESS UID\n"
        "                       one raw message\n"
        "  queue list [--state S] [--route R] [--domain D] [--older-than T]\n"
        "  queue show|retry|hold|release|delete ID, queue retry --all\n"
        "  tls reload           re-read the certificate and key files\n"
        "  mesh create          make this node the first member of a mesh\n"
        "  mesh invite [--expires DURATION] [--name NAME]\n"
        "                       print a single-use token for a new node\n"
        "  mesh join TOKEN      join a mesh with a token from a member\n"
        "  mesh remove NODE     revoke a node (name or fingerprint)\n"
        "  mesh peers|status    members, their state, addresses, RTT\n"
        "\n"
        "Client commands find the node with -d DATADIR or -c FILE;\n"
        "with neither, ./relaymesh-data. Listings take --json.\n"
        "See relaymesh(8) in README.md for details.\n");
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "serve") == 0)
        return node_serve_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("relaymesh %s\n", RM_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    return ctl_main(argc - 1, argv + 1);
}
