/*
 * mime_parse: the reader of one stored RFC 5322 / MIME message, for the
 * MAPI bridge's "read", "fetch_body" and "fetch_attachment" operations
 * (bridge/README.md; the bounds are those of bridge/proto.h). It mirrors
 * node/mime_compose.h, but reads what any mailer wrote, so it is
 * tolerant: bad input gives a best-effort parse, never a crash.
 *
 * What it reads:
 * - From, To, Cc, Bcc (RFC 5322 §3.4: groups, quoted strings, comments,
 *   angle and bare addresses, obsolete routes and spacing, §4.4); a
 *   display name is decoded (RFC 2047 §5 (3), also inside quotes) and
 *   cut to MIME_PARSE_NAME_MAX octets at a UTF-8 boundary; an address
 *   longer than MIME_PARSE_ADDR_MAX becomes "" (the name is kept); a
 *   mailbox without a phrase takes its comment as the name
 *   ("a@b (Ann)"). To, Cc and Bcc keep MIME_PARSE_RCPTS_MAX mailboxes
 *   together, in that order. The first field of each name counts.
 * - Subject: RFC 2047 B and Q encoded-words in any charset iconv knows
 *   (RFC 2231 §5 "charset*lang" too), white space between adjacent
 *   encoded-words dropped (RFC 2047 §6.2), cut to MIME_PARSE_SUBJECT_MAX.
 * - Date (RFC 5322 §3.3, obsolete forms §4.3, asctime-like order) to
 *   unix seconds UTC; 0 when absent or unparsable.
 * - Message-ID: the first "<...>" as written (else the trimmed value);
 *   "" past MIME_PARSE_MSGID_MAX.
 * - The header block: where it lies in the input (hdr_off, hdr_len; an
 *   mbox "From " line before it, RFC 4155, is skipped). It ends at the
 *   empty line, or at the first line that is neither a field nor a
 *   continuation (then the body starts there); no field at all is
 *   MIME_PARSE_F_NO_HEADERS and the whole input is the body.
 * - The body text: the first text/plain leaf that is not an attachment
 *   (multiparts walked depth first, so multipart/alternative gives
 *   its text/plain), else the first such text/html leaf (MIME_PARSE_F_HTML);
 *   transfer-decoded (base64, quoted-printable, else identity) and
 *   converted from its charset to UTF-8. An unknown charset, us-ascii or
 *   none is read as UTF-8; octets invalid in the charset become U+FFFD
 *   (one per maximal ill-formed subsequence for UTF-8); NUL is dropped.
 *   So body is always valid UTF-8 without NUL. Line ends are left as
 *   they were.
 * - The attachments (at most MIME_PARSE_ATTS_MAX, in document order):
 *   every leaf that is not the body and is Content-Disposition:
 *   attachment, or has a file name (RFC 2231 filename*= / name*= with
 *   continuations and charset, RFC 2047 inside a quoted name, plain
 *   filename= / name=), or is not text (inline images count).
 *   message/rfc822 and message/global count as one attachment each (not
 *   walked into; name "message.eml" when the part has none).
 *
 * Header text that is not encoded is taken as UTF-8 when the whole
 * field is valid UTF-8, else as Latin-1. Strings given out are valid
 * UTF-8 without NUL; CR and LF in decoded header text become SP.
 * A missing Content-Type is text/plain (message/rfc822 inside
 * multipart/digest), and so is an unparsable one (RFC 2045 §5.2,
 * RFC 2046 §5.1.5); a type longer than MIME_PARSE_TYPE_MAX is
 * application/octet-stream. A multipart without a boundary parameter or
 * whose boundary never occurs is read as a text/plain leaf.
 *
 * Limits (a stored message came from anyone): multipart nesting past
 * MIME_PARSE_DEPTH_MAX is a leaf; at most MIME_PARSE_PARTS_MAX parts
 * are looked at. Memory: the parse holds the body text (at most 3 times
 * its encoded size: U+FFFD for each octet) and small strings; during
 * the parse one more copy of the body's decoded octets and of the
 * header fields it reads. Time is linear in the input times the nesting
 * depth.
 *
 * Pure: no I/O, no loop, no global state (iconv descriptors are opened
 * per call). Calls on different structs may run on any threads; one
 * struct is not to be used by two threads at once.
 */
#ifndef RM_NODE_MIME_PARSE_H
#define RM_NODE_MIME_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Bounds, as bridge/proto.h has them. */
#define MIME_PARSE_RCPTS_MAX 256    /* To + Cc + Bcc kept */
#define MIME_PARSE_ATTS_MAX 100     /* attachments kept */
#define MIME_PARSE_NAME_MAX 256     /* display name, octets */
#define MIME_PARSE_ADDR_MAX 254     /* RFC 5321 §4.5.3.1.3 */
#define MIME_PARSE_SUBJECT_MAX 4096 /* decoded subject, octets */
#define MIME_PARSE_MSGID_MAX 998    /* RFC 5322 §2.1.1 */
#define MIME_PARSE_FILENAME_MAX 512 /* attachment name, octets */
#define MIME_PARSE_TYPE_MAX 255     /* "type/subtype" (RFC 6838 §4.2) */
#define MIME_PARSE_DEPTH_MAX 32     /* multipart nesting */
#define MIME_PARSE_PARTS_MAX 10000  /* parts looked at */
#define MIME_PARSE_WHY_MAX 96       /* reason text, NUL included */

/* flags: what the parse met (informational; the parse still succeeded) */
#define MIME_PARSE_F_HTML 0x01       /* the body text is text/html */
#define MIME_PARSE_F_NO_HEADERS 0x02 /* no header field at all */
#define MIME_PARSE_F_RCPTS_CUT 0x04  /* recipients past RCPTS_MAX dropped */
#define MIME_PARSE_F_ATTS_CUT 0x08   /* attachments past ATTS_MAX dropped */
#define MIME_PARSE_F_DEPTH_CUT 0x10  /* nesting past DEPTH_MAX */
#define MIME_PARSE_F_PARTS_CUT 0x20  /* parts past PARTS_MAX not read */
/* A multipart lacks its close delimiter (RFC 2046 §5.1.1). */
#define MIME_PARSE_F_UNCLOSED 0x40

/* Both NUL-terminated, never NULL; either may be "". */
struct mime_parse_addr {
    const char *name;    /* UTF-8, <= MIME_PARSE_NAME_MAX octets */
    const char *address; /* addr-spec without <>, <= MIME_PARSE_ADDR_MAX */
};

enum mime_parse_cte {
    MIME_PARSE_CTE_IDENTITY, /* 7bit, 8bit, binary, unknown */
    MIME_PARSE_CTE_BASE64,
    MIME_PARSE_CTE_QP
};

struct mime_parse_att {
    unsigned index;   /* 0-based, its place in atts */
    const char *name; /* UTF-8, <= MIME_PARSE_FILENAME_MAX, "" if none */
    const char *type; /* lower case "type/subtype", <= MIME_PARSE_TYPE_MAX */
    uint64_t size;    /* decoded octets */
    /* private: the encoded content in the input */
    size_t off, len;
    enum mime_parse_cte cte;
};

/*
 * The parse. Every pointer is owned by the struct and valid until
 * mime_parse_cleanup(), except `in`, which is the caller's input,
 * borrowed: mime_parse_att_decode() and mime_parse_att_read() read it,
 * so the input must stay valid and unchanged while they are called; the
 * other fields do not need it after mime_parse() returns.
 */
struct mime_parse_msg {
    const unsigned char *in; /* borrowed */
    size_t in_len;
    struct mime_parse_addr from; /* the first mailbox of From */
    const struct mime_parse_addr *to, *cc, *bcc;
    unsigned n_to, n_cc, n_bcc; /* together <= MIME_PARSE_RCPTS_MAX */
    const char *subject;        /* <= MIME_PARSE_SUBJECT_MAX; "" none */
    int64_t date;               /* unix seconds UTC; 0 none/unparsable */
    const char *message_id;     /* <= MIME_PARSE_MSGID_MAX; "" none */
    size_t hdr_off, hdr_len;    /* the header fields in the input, line
                                   ends included, the empty line that
                                   ends them not (raw octets: see
                                   mime_parse_headers_text) */
    const char *body;           /* UTF-8, NUL-terminated; "" if none */
    size_t body_len;            /* octets of body, NUL not counted */
    const struct mime_parse_att *atts;
    unsigned n_atts; /* <= MIME_PARSE_ATTS_MAX */
    unsigned flags;  /* MIME_PARSE_F_* */
    /* After an error: what went wrong. After success: the first defect
       met ("" when none), for the log. */
    char why[MIME_PARSE_WHY_MAX];
    void *mem;      /* private */
    void *mem_body; /* private */
};

/*
 * Parse len octets at msg (one message, CRLF or LF line ends) into *out,
 * which is overwritten (it need not be initialised). Returns 0, or
 * RM_E_INVAL (msg NULL or len 0: nothing to read), or -ENOMEM; on error
 * out->why says what happened and out needs no cleanup (cleanup is
 * harmless). Everything else is a best-effort parse and returns 0.
 */
int mime_parse(const void *msg, size_t len, struct mime_parse_msg *out);

/* Free what a parse holds; the struct's pointers are then invalid.
   Safe after a failed parse and on a zeroed struct; idempotent. */
void mime_parse_cleanup(struct mime_parse_msg *m);

/* Receives decoded octets in order. Non-zero stops the decoding, and
   that value is returned by the call that decodes. */
typedef int (*mime_parse_sink_fn)(void *arg, const void *data, size_t len);

/*
 * Decode attachment `index` and give the sink the decoded octets
 * [offset, offset + max) (fewer at the end; none when offset >= size),
 * in pieces of at most 4 KiB. Returns 0; RM_E_NOTFOUND when index >=
 * n_atts; RM_E_INVAL for a NULL sink; -ENOMEM; or the sink's non-zero
 * value (the sink is then not called again). Needs the input (see `in`).
 * The data are decoded from the start each time: serving a range costs
 * the octets before it too.
 */
int mime_parse_att_decode(const struct mime_parse_msg *m, unsigned index,
                          uint64_t offset, uint64_t max,
                          mime_parse_sink_fn sink, void *arg);

/* The same, appended to out (the chunk of fetch_attachment). 0,
   RM_E_NOTFOUND, RM_E_TOOBIG (past out->max: out is left as it was) or
   -ENOMEM. */
int mime_parse_att_read(const struct mime_parse_msg *m, unsigned index,
                        uint64_t offset, size_t max, struct buf *out);

/* Body octets [offset, offset + max) appended to out (fetch_body's
   chunk; may cut a UTF-8 sequence). 0, RM_E_TOOBIG, -ENOMEM. */
int mime_parse_body_read(const struct mime_parse_msg *m, uint64_t offset,
                         size_t max, struct buf *out);

/*
 * The header block as text for read's `headers`: at most max octets of
 * valid UTF-8 without NUL, appended to out, ending at a line end when
 * it has to be cut and a line end fits (else at a character boundary).
 * Octets that are not UTF-8 are read as Latin-1. Needs the input. 0,
 * RM_E_TOOBIG, -ENOMEM (out left as it was).
 */
int mime_parse_headers_text(const struct mime_parse_msg *m, size_t max,
                            struct buf *out);

/* The longest prefix of s[0..len) of at most max octets that does not
   end inside a UTF-8 sequence (for read's inline body). */
size_t mime_parse_utf8_cut(const char *s, size_t len, size_t max);

/*
 * An RFC 5322 §3.3 date-time (with the obsolete forms of §4.3: two- and
 * three-digit years, named and military zones, comments, no day name or
 * seconds; also "Mon Jan 2 15:04:05 2006" order) to unix seconds UTC in
 * *t. 0, or RM_E_INVAL when no day, month and year can be found or a
 * value is out of range (*t untouched). A zone that is not understood
 * counts as UTC (§4.3: "-0000").
 */
int mime_parse_date(const char *s, size_t len, int64_t *t);

#endif
