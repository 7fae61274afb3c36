/*
 * proto: the MAPI bridge's wire codec, shared by the node (bridge/) and the
 * Windows DLL (win32/). Plain portable C over msgpack-c: no I/O, no
 * globals, no libuv, no LMDB, no libsodium, no POSIX-only call, so the
 * same file builds with mingw-w64. Prefix bproto_ (the library rm_bproto).
 *
 * Where it sits. The bridge runs over the mesh's secure channel (a Noise
 * handshake, mesh/noise.h, then frames, mesh/frame.h). Every frame carries
 * {"v": FRAME_VERSION, "t": type, "b": body}: t = BPROTO_T_REQ for a
 * request (client to node), BPROTO_T_RES for its response; BPROTO_T_EVENT
 * is reserved for node-initiated notifications (part 2). This codec makes
 * and reads the body b. bridge/README.md is the protocol's reference (the
 * message table); the summary:
 *
 *   request   {"id": uint, "op": str, "a": {args}}
 *   response  {"id": uint, "ok": true, "r": {result}}
 *             {"id": uint, "ok": false,
 *              "err": {"code": str, "msg": str}}
 *
 * The response repeats its request's id; the client may choose ids freely
 * (a counter). The protocol version (BPROTO_VERSION) is agreed in logon;
 * the frame layer has its own.
 *
 * Encoding rules (checked by encoders, RM_E_INVAL, and by decoders,
 * RM_E_PROTO; so whatever decodes re-encodes):
 *   - maps have string keys; a decoder ignores keys it does not know
 *     (forward compatibility) and refuses a key given twice or a key that
 *     is not a string;
 *   - a required key missing, a value of the wrong type, a string or list
 *     longer than its bound, or an integer out of its range is refused;
 *   - an optional key given as nil counts as absent; an absent list is
 *     empty;
 *   - text (msgpack str) is valid UTF-8 without NUL, at most the bound in
 *     bytes; binary data is msgpack bin;
 *   - integers are unsigned (msgpack positive integers) except dates,
 *     which are signed unix seconds; a float is never accepted;
 *   - message ids are 1 .. 2^64-1 (0 means "none" in the C structs where
 *     an id is optional, and is never sent);
 *   - enumerated strings: an unknown error code decodes as
 *     BPROTO_E_FAILURE, an unknown folder role as BPROTO_ROLE_NONE; other
 *     enumerations (ops, change kinds) are closed for a protocol version.
 * Encoders are deterministic (fixed key order, shortest integer forms), so
 * decode-then-encode is a canonical form: tests compare encodings.
 *
 * Bounds. Every string, list and number has the explicit bound below. The
 * bounds are chosen so that any request or response that satisfies them
 * encodes to at most BPROTO_MSG_MAX bytes (one logical frame message):
 * inline text and data are limited by BPROTO_INLINE_MAX; anything larger
 * moves in chunks (fetch_attachment / fetch_body down, upload up).
 *
 * Memory and ownership.
 *   Encoding: the caller fills a struct bproto_req / bproto_res with
 *   pointers to its own strings and arrays (NUL-terminated UTF-8; bins as
 *   pointer + length). The encoder reads them during the call only. A NULL
 *   string is sent as "" where a string is required, and omits the key
 *   where it is optional (documented per field). The encoder appends one
 *   msgpack value to out, bounded by out->max and BPROTO_MSG_MAX; on
 *   error nothing is appended. A logon request's bytes in out contain the
 *   password: the caller wipes them.
 *   Decoding: every string, bin and array of the decoded struct is a copy
 *   in memory owned by the struct (a private arena, one or a few heap
 *   blocks), valid until bproto_req_cleanup() / bproto_res_cleanup(),
 *   independent of the input, which may be freed or reused right after
 *   the call (so a node may keep a decoded request across asynchronous
 *   work). Cleanup wipes that memory before freeing it (the logon
 *   password lives there). A decoder overwrites *out entirely: out must
 *   not hold an earlier decode that was not cleaned up. After an error
 *   *out holds no memory (cleanup is still allowed). Bytes decoders run
 *   mpack_check() first and unpack into a private msgpack zone freed
 *   before they return (about 24 bytes per input byte at worst); the
 *   arena holds at most about the input size again.
 *   Strings are never NULL in a decoded struct except the optional ones
 *   marked "NULL: absent" (and err.msg of a successful response); an
 *   array or bin is NULL exactly when its count or length is 0.
 *
 * Errors: 0 or a negative code from common/rm_error.h.
 *   RM_E_PROTO     decoding: malformed input (see the rules above).
 *   RM_E_NOTFOUND  bproto_req_decode*(): a well-formed request whose op
 *                  this codec does not know (answer BPROTO_E_UNSUPPORTED).
 *   RM_E_TOOBIG    decoding: input longer than BPROTO_MSG_MAX;
 *                  encoding: out->max too small for the encoding.
 *   RM_E_INVAL     encoding: a struct that breaks the rules (a bound, bad
 *                  UTF-8, a NULL array with a count, a bad op or enum);
 *                  NULL arguments.
 *   -ENOMEM        allocation failed (nothing is leaked).
 * After a request decode error, out->has_id says whether the envelope's
 * id was readable (then out->id holds it and the node answers with that
 * id: BPROTO_E_BAD_REQUEST or BPROTO_E_UNSUPPORTED; without an id the
 * peer is broken and the channel is closed), and out->why holds a short
 * reason naming the key ("a.folder: too long") for logs and the error
 * message. Responses have out->why too.
 *
 * Threads: no shared state; any function may run on any thread, on
 * distinct arguments. Never aborts: every failure is a return code (the
 * DLL runs inside other programs).
 */
#ifndef RM_BRIDGE_PROTO_H
#define RM_BRIDGE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "common/buf.h"

#define BPROTO_VERSION 1 /* protocol version agreed in logon */

/* Frame types ("t" of mesh/frame.h's map). */
#define BPROTO_T_REQ "req"
#define BPROTO_T_RES "res"
#define BPROTO_T_EVENT "ev" /* reserved: node-initiated notifications */

/* ---- bounds (bytes of UTF-8 unless said otherwise) ---------------------- */

/* One request or response body: the frame layer's logical message
 * (FRAME_MSG_MAX in mesh/frame.h; the unit test checks they agree). */
#define BPROTO_MSG_MAX (1024 * 1024)
#define BPROTO_OP_MAX 32       /* op name */
#define BPROTO_ADDRESS_MAX 254 /* RFC 5321 4.5.3.1.3: 256 with "<>" */
#define BPROTO_NAME_MAX 256    /* display name; resolve query */
#define BPROTO_PASSWORD_MAX 1024
#define BPROTO_CLIENT_MAX 255 /* client software, for the node's log */
#define BPROTO_NODE_MAX 255   /* node name */
#define BPROTO_FOLDER_ID_MAX 255
#define BPROTO_FOLDER_NAME_MAX 255
#define BPROTO_FOLDERS_MAX 256  /* folders in a list */
#define BPROTO_SUBJECT_MAX 4096 /* decoded Subject */
#define BPROTO_MSGID_MAX 998    /* Message-ID: RFC 5322 2.1.1 line limit */
#define BPROTO_HEADERS_MAX (64 * 1024) /* header block in read */
/* Inline text and data: the body in read; in send / save the inline body
 * plus every inline attachment's data, together. */
#define BPROTO_INLINE_MAX (512 * 1024)
#define BPROTO_CHUNK_MAX (512 * 1024) /* fetch_* and upload data */
#define BPROTO_RCPTS_MAX 256          /* to + cc + bcc of one message */
#define BPROTO_ATTS_MAX 100           /* attachments of one message */
#define BPROTO_FILENAME_MAX 512       /* attachment name */
#define BPROTO_MIME_MAX 255     /* "type/subtype": RFC 6838 4.2, 127 each */
#define BPROTO_FIND_MAX 1000    /* ids per find */
#define BPROTO_MATCHES_MAX 100  /* resolve matches */
#define BPROTO_CHANGES_MAX 1000 /* changes per call */
#define BPROTO_ERRCODE_MAX 64   /* error code string (unknown: failure) */
#define BPROTO_ERRMSG_MAX 1024  /* error message */
#define BPROTO_WHY_MAX 96       /* decode failure reason, NUL included */
/* Sizes and offsets of messages, bodies, attachments and uploads: the
 * largest limits.max_message_size a node accepts (4 GiB). A node announces
 * its own, lower, limit in logon (max_message). */
#define BPROTO_MESSAGE_MAX (UINT64_C(1) << 32)
/* Counts (folder totals) and flag words. */
#define BPROTO_COUNT_MAX UINT32_MAX

/* ---- enumerations ------------------------------------------------------- */

enum bproto_op {
    BPROTO_OP_LOGON,
    BPROTO_OP_LOGOFF,
    BPROTO_OP_PING,
    BPROTO_OP_FOLDERS,
    BPROTO_OP_FIND,
    BPROTO_OP_READ,
    BPROTO_OP_FETCH_ATTACHMENT,
    BPROTO_OP_FETCH_BODY,
    BPROTO_OP_UPLOAD,
    BPROTO_OP_SAVE,
    BPROTO_OP_DELETE,
    BPROTO_OP_MARK,
    BPROTO_OP_SEND,
    BPROTO_OP_RESOLVE,
    BPROTO_OP_CHANGES,
    BPROTO_OP_COUNT
};

/* Error kinds of a failed response; the wire strings are in README.md.
 * Numbers are not on the wire; append only. */
enum bproto_errcode {
    BPROTO_E_FAILURE,              /* "failure": anything else */
    BPROTO_E_BAD_REQUEST,          /* "bad_request": malformed request */
    BPROTO_E_UNSUPPORTED,          /* "unsupported": op unknown here */
    BPROTO_E_VERSION,              /* "unsupported_version" */
    BPROTO_E_LOGIN_FAILURE,        /* "login_failure" */
    BPROTO_E_NOT_LOGGED_IN,        /* "not_logged_in" */
    BPROTO_E_UNKNOWN_RECIPIENT,    /* "unknown_recipient" */
    BPROTO_E_AMBIGUOUS_RECIPIENT,  /* "ambiguous_recipient" */
    BPROTO_E_TOO_MANY_RECIPIENTS,  /* "too_many_recipients" */
    BPROTO_E_NO_MESSAGES,          /* "no_messages" */
    BPROTO_E_INVALID_MESSAGE,      /* "invalid_message" */
    BPROTO_E_ATTACHMENT_NOT_FOUND, /* "attachment_not_found" */
    BPROTO_E_FOLDER_NOT_FOUND,     /* "folder_not_found" */
    BPROTO_E_TOO_BIG,              /* "too_big" */
    BPROTO_E_DISK_FULL,            /* "disk_full" */
    BPROTO_E_ACCESS_DENIED,        /* "access_denied" */
    BPROTO_E_TRY_LATER,            /* "try_later": temporary, retry */
    BPROTO_E_RESYNC,               /* "resync": changes since is too old */
    BPROTO_E_COUNT
};

enum bproto_role {
    BPROTO_ROLE_NONE, /* "" (and any role this codec does not know) */
    BPROTO_ROLE_INBOX,
    BPROTO_ROLE_OUTBOX,
    BPROTO_ROLE_SENT,
    BPROTO_ROLE_DRAFTS,
    BPROTO_ROLE_DELETED,
    BPROTO_ROLE_JUNK,
    BPROTO_ROLE_COUNT
};

enum bproto_change_kind {
    BPROTO_CHANGE_NEW,     /* "new": a message appeared */
    BPROTO_CHANGE_CHANGED, /* "changed": its flags changed */
    BPROTO_CHANGE_DELETED, /* "deleted": it is gone */
    BPROTO_CHANGE_COUNT
};

/* Message flags (a uint on the wire; bits not named here are carried
 * through unchanged). */
#define BPROTO_FLAG_READ 0x01     /* seen; Simple MAPI's MAPI_UNREAD is !READ */
#define BPROTO_FLAG_RECEIPT 0x02  /* read receipt requested */
#define BPROTO_FLAG_SENT 0x04     /* sent by this user */
#define BPROTO_FLAG_DRAFT 0x08    /* unsent draft */
#define BPROTO_FLAG_ANSWERED 0x10 /* replied to */
#define BPROTO_FLAG_FLAGGED 0x20  /* flagged for follow-up */
#define BPROTO_FLAG_ATTACH 0x40   /* has attachments */

/* Wire names; static storage; NULL for a value out of range. */
const char *bproto_op_name(enum bproto_op op);
const char *bproto_errcode_name(enum bproto_errcode code);
const char *bproto_role_name(enum bproto_role role);
const char *bproto_change_name(enum bproto_change_kind kind);
/* Wire name (len bytes, not NUL-terminated) to op: 0 or RM_E_NOTFOUND. */
int bproto_op_parse(const char *s, size_t len, enum bproto_op *out);

/* ---- shared values ------------------------------------------------------ */

/* {"name": str <= BPROTO_NAME_MAX, "address": str <= BPROTO_ADDRESS_MAX};
 * either may be "" (a display name alone, an unparsable From). */
struct bproto_addr {
    const char *name;
    const char *address;
};

/* An attachment given with a message to send or save: {"name", "type",
 * "data": bin} inline, or {"name", "type", "upload": handle} from an
 * earlier upload. type "" lets the node choose (from the name). */
struct bproto_att_in {
    const char *name;    /* <= BPROTO_FILENAME_MAX, may be "" */
    const char *type;    /* MIME type <= BPROTO_MIME_MAX, may be "" */
    uint64_t upload;     /* 0: inline data; else an upload handle */
    const uint8_t *data; /* inline (upload == 0); NULL only if len == 0 */
    size_t len;
};

/* A message to send or save. On the wire its keys sit directly in the
 * request's args: "from" (optional), "to", "cc", "bcc" (lists of addr),
 * "subject", "body" (inline text) or "body_upload" (handle of an upload
 * holding UTF-8 text; never both), "attachments", "flags". The inline
 * body and all inline data together: at most BPROTO_INLINE_MAX bytes;
 * recipients at most BPROTO_RCPTS_MAX, attachments BPROTO_ATTS_MAX. */
struct bproto_compose {
    const struct bproto_addr *from; /* NULL: absent (the logged-on user) */
    unsigned n_to, n_cc, n_bcc;
    const struct bproto_addr *to, *cc, *bcc;
    const char *subject;  /* <= BPROTO_SUBJECT_MAX; NULL as "" */
    const char *body;     /* NULL: absent (empty, or body_upload) */
    uint64_t body_upload; /* 0: none */
    unsigned n_atts;
    const struct bproto_att_in *atts;
    uint32_t flags; /* BPROTO_FLAG_RECEIPT is the one that matters */
};

/* ---- requests (args) ---------------------------------------------------- */

struct bproto_logon_args {
    uint32_t version;     /* the client's highest version, >= 1 */
    const char *user;     /* address, 1 .. BPROTO_ADDRESS_MAX */
    const char *password; /* <= BPROTO_PASSWORD_MAX; NULL as "" */
    const char *client;   /* <= BPROTO_CLIENT_MAX; NULL: absent */
};

struct bproto_find_args {
    const char *folder; /* folder id, 1 .. BPROTO_FOLDER_ID_MAX */
    uint64_t after;     /* 0: from the first message */
    int unread_only;
    uint32_t limit; /* 1 .. BPROTO_FIND_MAX */
};

struct bproto_read_args {
    const char *folder;
    uint64_t id;       /* >= 1 */
    int peek;          /* do not mark it read */
    int envelope_only; /* no body, no headers */
    int body;          /* send the body text (default 1) */
    int headers;       /* send the header block (default 0) */
};

/* fetch_attachment and fetch_body (index unused, not sent). */
struct bproto_fetch_args {
    const char *folder;
    uint64_t id;     /* >= 1 */
    uint32_t index;  /* attachment index from read */
    uint64_t offset; /* <= BPROTO_MESSAGE_MAX */
    uint32_t max;    /* 1 .. BPROTO_CHUNK_MAX */
};

struct bproto_upload_args {
    uint64_t upload;     /* 0: start a new upload; else continue this one */
    uint64_t offset;     /* bytes already uploaded, <= BPROTO_MESSAGE_MAX */
    const uint8_t *data; /* NULL only if len == 0 */
    size_t len;          /* <= BPROTO_CHUNK_MAX */
};

struct bproto_save_args {
    const char *folder;
    uint64_t id; /* 0: a new message; else the one it replaces */
    struct bproto_compose m;
};

/* delete, and the target of mark. */
struct bproto_msg_ref {
    const char *folder;
    uint64_t id; /* >= 1 */
};

struct bproto_mark_args {
    const char *folder;
    uint64_t id; /* >= 1 */
    int read;
};

struct bproto_resolve_args {
    const char *name; /* name or address, 1 .. BPROTO_NAME_MAX */
    int partial;      /* prefix / substring matches too */
};

struct bproto_changes_args {
    const char *folder;
    uint64_t since; /* change counter; 0: from the beginning */
    uint32_t limit; /* 1 .. BPROTO_CHANGES_MAX */
};

/* Private: the arena that owns a decoded struct's strings and arrays. */
struct bproto_mem;

struct bproto_req {
    uint64_t id;
    enum bproto_op op;
    union {
        struct bproto_logon_args logon;
        struct bproto_find_args find;
        struct bproto_read_args read;
        struct bproto_fetch_args fetch; /* FETCH_ATTACHMENT, FETCH_BODY */
        struct bproto_upload_args upload;
        struct bproto_save_args save;
        struct bproto_msg_ref del; /* DELETE */
        struct bproto_mark_args mark;
        struct bproto_compose send;
        struct bproto_resolve_args resolve;
        struct bproto_changes_args changes;
    } a; /* LOGOFF, PING, FOLDERS: none */
    /* Set by the decoders (ignored by the encoder): */
    int has_id;               /* the envelope's id was readable */
    char why[BPROTO_WHY_MAX]; /* after an error: what was wrong */
    struct bproto_mem *mem;   /* private */
};

/* ---- responses (results) ------------------------------------------------ */

struct bproto_folder {
    const char *id;   /* 1 .. BPROTO_FOLDER_ID_MAX, opaque to the client */
    const char *name; /* display name <= BPROTO_FOLDER_NAME_MAX */
    enum bproto_role role;
    uint32_t total, unread; /* unread <= total */
    uint64_t change;        /* change counter now (changes); 0: none */
};

struct bproto_logon_res {
    uint32_t version;     /* what both speak: <= the client's, >= 1 */
    const char *user;     /* canonical address, 1 .. BPROTO_ADDRESS_MAX */
    const char *name;     /* display name; NULL as "" */
    const char *node;     /* node name <= BPROTO_NODE_MAX; NULL as "" */
    uint64_t max_message; /* largest message the node takes (bytes) */
    unsigned n_folders;   /* <= BPROTO_FOLDERS_MAX */
    const struct bproto_folder *folders;
};

struct bproto_folders_res {
    unsigned n_folders;
    const struct bproto_folder *folders;
};

struct bproto_find_res {
    unsigned n_ids; /* <= BPROTO_FIND_MAX; 0: nothing (more) */
    const uint64_t *ids;
    int more; /* more matches follow the last id */
};

struct bproto_att_info {
    uint32_t index;   /* for fetch_attachment */
    const char *name; /* <= BPROTO_FILENAME_MAX */
    const char *type; /* <= BPROTO_MIME_MAX */
    uint64_t size;    /* decoded bytes, <= BPROTO_MESSAGE_MAX */
};

/* read's result. */
struct bproto_message {
    uint64_t id;
    uint32_t flags; /* BPROTO_FLAG_* */
    struct bproto_addr from;
    unsigned n_to, n_cc, n_bcc; /* together <= BPROTO_RCPTS_MAX */
    const struct bproto_addr *to, *cc, *bcc;
    const char *subject;    /* NULL as "" */
    int64_t date;           /* Date: header, unix seconds; 0: none */
    int64_t received;       /* arrival, unix seconds */
    const char *message_id; /* Message-ID with <>; NULL as "" */
    uint64_t size;          /* of the RFC 5322 message */
    const char *headers;    /* <= BPROTO_HEADERS_MAX; NULL: absent */
    const char *body;       /* <= BPROTO_INLINE_MAX; NULL: absent */
    uint64_t body_size;     /* whole body text; >= strlen(body): the rest
                               comes from fetch_body */
    unsigned n_atts;        /* <= BPROTO_ATTS_MAX */
    const struct bproto_att_info *atts;
};

/* fetch_attachment and fetch_body. offset + len <= total, and last is
 * set exactly when offset + len == total. */
struct bproto_chunk {
    const uint8_t *data; /* NULL only if len == 0 */
    size_t len;          /* <= BPROTO_CHUNK_MAX */
    uint64_t total;      /* <= BPROTO_MESSAGE_MAX */
    uint64_t offset;
    int last;
};

struct bproto_upload_res {
    uint64_t upload; /* handle, >= 1 */
    uint64_t size;   /* bytes uploaded so far */
};

struct bproto_save_res {
    uint64_t id; /* >= 1 */
};

struct bproto_send_res {
    const char *message_id; /* 1 .. BPROTO_MSGID_MAX */
    uint64_t id;            /* the copy in Sent; 0: none filed */
};

/* Unknown: n == 0; resolved: n == 1; ambiguous: n > 1. */
struct bproto_resolve_res {
    unsigned n; /* <= BPROTO_MATCHES_MAX */
    const struct bproto_addr *matches;
    int exact; /* the matches are exact, not partial */
    int more;  /* more matched than were sent */
};

struct bproto_change {
    uint64_t id; /* >= 1 */
    enum bproto_change_kind kind;
    uint32_t flags; /* NEW, CHANGED: the flags now */
};

struct bproto_changes_res {
    unsigned n; /* <= BPROTO_CHANGES_MAX */
    const struct bproto_change *changes;
    uint64_t next; /* since for the next call */
    int more;
};

struct bproto_res {
    uint64_t id;
    enum bproto_op op; /* which result r holds (see bproto_res_decode) */
    int ok;
    struct {
        enum bproto_errcode code;
        const char *msg; /* <= BPROTO_ERRMSG_MAX; NULL as "" */
    } err;               /* when !ok */
    union {
        struct bproto_logon_res logon;
        struct bproto_folders_res folders;
        struct bproto_find_res find;
        struct bproto_message read;
        struct bproto_chunk chunk; /* FETCH_ATTACHMENT, FETCH_BODY */
        struct bproto_upload_res upload;
        struct bproto_save_res save;
        struct bproto_send_res send;
        struct bproto_resolve_res resolve;
        struct bproto_changes_res changes;
    } r; /* when ok; LOGOFF, PING, DELETE, MARK: none ({}) */
    char why[BPROTO_WHY_MAX]; /* decoders: after an error */
    struct bproto_mem *mem;   /* private */
};

/* ---- functions ---------------------------------------------------------- */

/*
 * Append the request's body (one msgpack map) to out. q->op selects the
 * args in q->a. Errors: RM_E_INVAL, RM_E_TOOBIG, -ENOMEM.
 */
int bproto_req_encode(struct buf *out, const struct bproto_req *q);
/*
 * Decode a request body: p / len bytes (at most BPROTO_MSG_MAX), or a
 * value already unpacked and checked (a frame body, mesh/frame.h). See
 * "Errors" above for has_id / why; RM_E_NOTFOUND for an unknown op.
 */
int bproto_req_decode(const void *p, size_t len, struct bproto_req *out);
int bproto_req_decode_obj(const msgpack_object *o, struct bproto_req *out);
/* Free and wipe what a decode allocated; the struct's pointers are then
 * invalid. Safe on a struct the caller filled (mem NULL) and after a
 * failed decode. */
void bproto_req_cleanup(struct bproto_req *q);

/*
 * Append the response's body. s->ok selects r (s->op says which result)
 * or err. Errors: RM_E_INVAL, RM_E_TOOBIG, -ENOMEM.
 */
int bproto_res_encode(struct buf *out, const struct bproto_res *s);
/* Shorthand for a failed response. */
int bproto_res_encode_err(struct buf *out, uint64_t id,
                          enum bproto_errcode code, const char *msg);
/*
 * Decode a response to a request of kind op (the client knows which op it
 * sent under the id; bproto_res_id() reads the id first when several are
 * in flight). out->op = op. A failed response decodes whatever op is; an
 * op out of range is RM_E_INVAL.
 */
int bproto_res_decode(const void *p, size_t len, enum bproto_op op,
                      struct bproto_res *out);
int bproto_res_decode_obj(const msgpack_object *o, enum bproto_op op,
                          struct bproto_res *out);
/* The id of a response (or request) value: 0 or RM_E_PROTO. */
int bproto_res_id(const msgpack_object *o, uint64_t *id);
void bproto_res_cleanup(struct bproto_res *s);

/* 1 if s is len bytes of valid UTF-8 without NUL, else 0 (the rule for
 * every text value; exported for the node and the DLL's conversions). */
int bproto_text_valid(const char *s, size_t len);

#endif
