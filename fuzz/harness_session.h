/*
 * A real SMTP session over a socketpair against a real store in a temp
 * dir, for the session fuzzer and the session unit tests. No listener,
 * no queue manager: local entries stay queued unless the caller delivers
 * them.
 */
#ifndef RM_HARNESS_SESSION_H
#define RM_HARNESS_SESSION_H

#include <stddef.h>

#include "common/buf.h"
#include "node/node.h"

struct harness {
    uv_loop_t loop;
    struct node n;
    struct node_config cfg;
    char dir[256];
};

/* Create the temp store and a node with the embedded default config
   (hostname "mx.test.example", local user alice@localhost). 0 or <0. */
int harness_init(struct harness *h, int nosync);
/* Run one session: feed input (then EOF), collect every reply byte into
   out (bounded). trusted: peer counts as in mynetworks. Returns 0. */
int harness_converse(struct harness *h, const char *input, size_t len,
                     int trusted, struct buf *out);
/* Deliver every queued local entry into its mailbox. */
int harness_deliver(struct harness *h);
void harness_cleanup(struct harness *h);

#endif
