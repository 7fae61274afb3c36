/*
 * server_int.h: what the bridge server's files share (server.c: listener,
 * sessions, dispatch and the simple operations; compose.c: send and save;
 * read.c: read and the fetches). Not a public interface.
 */
#ifndef RM_BRIDGE_SERVER_INT_H
#define RM_BRIDGE_SERVER_INT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "bridge/proto.h"
#include "bridge/server.h"
#include "common/buf.h"
#include "node/mime_parse.h"
#include "node/node.h"
#include "node/node_config.h"
#include "store/store.h"

#define BRIDGE_UPLOADS_MAX 8 /* uploads open at once per session */

/* The folders every user has; a folder id on the wire is the id here. */
enum bfolder { BF_INBOX, BF_SENT, BF_DRAFTS, BF_COUNT };

struct bupload {
    uint64_t handle;
    struct buf data;
    struct bupload *next;
};

/* A request waiting for its turn: decoded, or refused with a reason. */
struct bqent {
    struct bproto_req q;
    int bad; /* answer code / why instead of running it */
    enum bproto_errcode code;
    char why[BPROTO_WHY_MAX];
};

struct bsend;

/* The message read last, for fetch_* and a read right after. */
struct bcache {
    enum bfolder folder;
    uint64_t id;      /* 0: empty */
    uint32_t flags;   /* store flags when read */
    int64_t received; /* internal date */
    struct buf raw;
    int parsed;
    struct mime_parse_msg p;
    int att_index; /* attachment decoded in att; -1 none */
    struct buf att;
};

struct bsess {
    struct bridge *b;
    struct bsess *prev, *next;
    struct mesh_conn *c; /* NULL once closed */
    uv_timer_t timer;    /* the delay of a failed logon */
    int nhandles;        /* handles of the session still open */
    uint64_t sid;
    char peer_ip[64];
    int logged_on;
    uint64_t started;       /* loop ms at accept */
    int hold_ip, hold_user; /* logon checks in flight counted */
    char hold_key[STORE_ADDR_MAX];
    int closing; /* no more requests are taken */
    char user[STORE_ADDR_MAX];
    char client[BPROTO_CLIENT_MAX + 1];
    /* Requests in order; head is running when busy. */
    struct bqent q[BRIDGE_QUEUE_MAX];
    unsigned qhead, qlen;
    int busy;
    int work_pending; /* argon2id on the thread pool */
    /* Uploads. */
    struct bupload *uploads;
    unsigned nuploads;
    uint64_t upload_bytes; /* held by all uploads, <= max_message_size */
    uint64_t next_upload;
    /* Async state of the running request. */
    uint32_t uid;                        /* store_mailbox_file() result */
    struct store_file file;              /* its argument */
    struct buf msg;                      /* a composed message */
    char msgid[1024];                    /* its Message-ID */
    char mbox_file[STORE_ADDR_MAX + 16]; /* file's mailbox */
    struct bsend *send;                  /* send in flight */
    int logon_fail;                      /* the held answer is a failure */
    int logon_close; /* close after it (address locked out) */
    uint32_t logon_version;
    struct bcache cache;
};

struct bridge {
    struct node *n;
    uv_loop_t *loop;
    const struct node_config *cfg;
    uv_tcp_t listeners[NODE_CONFIG_LISTEN_MAX];
    unsigned nlisteners;
    int nhandles;     /* listeners and the sweep timer still open */
    uv_timer_t sweep; /* logon timeouts */
    int has_sweep;
    uint8_t *x_sk; /* X25519 static key, sodium_malloc */
    struct buf cred;
    struct bsess *sessions;
    unsigned nsessions;
    uint64_t next_sid;
    int closing;
    struct {
        uint64_t sessions;
        uint64_t refused;
        uint64_t logons;
        uint64_t logon_failures;
        uint64_t sent;
        uint64_t saved;
    } st;
};

/* server.c */
const char *bs_folder_id(enum bfolder f);
/* The store mailbox of folder f for the session's user. */
void bs_mailbox(const struct bsess *s, enum bfolder f, char *out, size_t outsz);
/* Folder id (from a request) to folder: 0, or answers folder_not_found and
 * returns -1. */
int bs_folder(struct bsess *s, const char *id, enum bfolder *out);
/* Split a wire message id against the mailbox's UIDVALIDITY: 0 and *uid,
 * or -1 (no such message: the caller answers invalid_message). */
int bs_msgid(struct bsess *s, const char *mailbox, uint64_t id, uint32_t *uid);
uint64_t bs_wire_id(uint32_t uidvalidity, uint32_t uid);
unsigned bs_flags_to_wire(unsigned store_flags, enum bfolder f);
/* Answers (the running request's id); the request is done afterwards:
 * bs_done() must follow for an asynchronous one. */
void bs_reply(struct bsess *s, struct bproto_res *res);
void bs_fail(struct bsess *s, enum bproto_errcode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The running (asynchronous) request has answered: run the next. */
void bs_done(struct bsess *s);
struct bupload *bs_upload_get(struct bsess *s, uint64_t handle);
void bs_upload_drop(struct bsess *s, struct bupload *u);
void bs_cache_clear(struct bcache *c);

/* compose.c: 1 when the request went asynchronous (bs_done follows). */
int bs_op_send(struct bsess *s, const struct bproto_req *q);
int bs_op_save(struct bsess *s, const struct bproto_req *q);
void bs_send_free(struct bsess *s);
/* The connection went while a send waits for [mesh] ack_replicas: the
   message is withdrawn; 1 when so (the request is over, its callback
   never runs), else 0. */
int bs_send_abandon(struct bsess *s);

/* read.c */
int bs_op_read(struct bsess *s, const struct bproto_req *q);
int bs_op_fetch(struct bsess *s, const struct bproto_req *q);

#endif
