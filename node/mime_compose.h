/*
 * mime_compose: a whole RFC 5322 / MIME message composed from structured
 * input, for the MAPI bridge's "send" and "save draft" operations.
 *
 * Output (appended to a struct buf): CRLF line ends, no dot-stuffing,
 * every line at most 998 octets and header lines folded at 78 where the
 * content allows (RFC 5322 §2.1.1, §2.2.3):
 *   Date, From, To, Cc, [Bcc], Subject, Message-ID, In-Reply-To,
 *   References, Disposition-Notification-To, MIME-Version, Content-*.
 * - Display names and the subject are written as they are when they are
 *   plain printable ASCII, display names quoted when they hold specials
 *   (RFC 5322 §3.2.4, §3.4); otherwise as RFC 2047 B encoded-words in
 *   UTF-8, each at most 75 characters, never splitting a UTF-8 sequence
 *   (RFC 2047 §2, §5).
 * - The text body is text/plain; charset=utf-8, line ends normalised to
 *   CRLF: 7bit when it is ASCII with lines of at most 998 octets,
 *   otherwise quoted-printable (RFC 2045 §6.7), or base64 when most of it
 *   would need escaping (e.g. CJK text).
 * - With attachments, multipart/mixed (RFC 2046 §5.1.3): the text part,
 *   then one base64 part (76-character lines, RFC 2045 §6.8) per
 *   attachment with Content-Disposition: attachment; filename (RFC 2183),
 *   RFC 2231 filename*=utf-8''... for a non-ASCII name, plus a
 *   Content-Type name= parameter (RFC 2047 encoded-words inside the
 *   quotes, folded between them, for clients that predate RFC 2231).
 *
 * Pure: no I/O, no loop, no clock, no random source: the caller gives the
 * Date and MIME_COMPOSE_RANDOM_LEN random bytes (Message-ID and
 * boundary), so the same input gives the same output.
 * No global state: calls on different bufs may run on any threads.
 */
#ifndef RM_NODE_MIME_COMPOSE_H
#define RM_NODE_MIME_COMPOSE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Bounds (a message from the bridge is user input). */
#define MIME_COMPOSE_RCPTS_MAX 1000   /* To + Cc + Bcc */
#define MIME_COMPOSE_ATTACH_MAX 250   /* attachments */
#define MIME_COMPOSE_NAME_MAX 512     /* display name, octets */
#define MIME_COMPOSE_SUBJECT_MAX 4096 /* subject, octets */
#define MIME_COMPOSE_FILENAME_MAX 255 /* attachment file name, octets */
#define MIME_COMPOSE_TYPE_MAX 127     /* "type/subtype" (RFC 6838 §4.2) */
#define MIME_COMPOSE_REFS_MAX 8192    /* References, octets */
#define MIME_COMPOSE_HOST_MAX 253     /* msgid_domain (RFC 1035 §2.3.4) */
/* Random bytes the caller gives: 16 for the Message-ID, 16 for the
   boundary. */
#define MIME_COMPOSE_RANDOM_LEN 32
/* Room for the Message-ID written back: "<" 32 hex "@" domain ">" NUL. */
#define MIME_COMPOSE_MSGID_SIZE (MIME_COMPOSE_HOST_MAX + 36)
/* Room for an RFC 5322 §3.3 date in UTC and its NUL. */
#define MIME_COMPOSE_DATE_SIZE 40

struct mime_compose_addr {
    const char *name; /* display name, UTF-8; NULL or "" for none */
    const char *addr; /* addr-spec "local@domain" without <>, ASCII, in
                         the syntax RFC 5321 §4.1.2 allows in MAIL FROM
                         (smtp_cmd_parse's rules, no source route) */
};

struct mime_compose_attach {
    const char *filename; /* UTF-8, non-empty, no control characters */
    const char *type;     /* "type/subtype" (RFC 2045 §5.1 tokens), or
                             NULL to guess from the file name's extension
                             (application/octet-stream when unknown).
                             multipart/ and message/ are refused: they
                             may not be base64 (RFC 2046 §5.1, §5.2) */
    const void *data;     /* len bytes, any values; NULL only if len 0 */
    size_t len;
};

struct mime_compose_msg {
    struct mime_compose_addr from; /* required */
    const struct mime_compose_addr *to;
    size_t nto;
    const struct mime_compose_addr *cc;
    size_t ncc;
    const struct mime_compose_addr *bcc; /* never written unless keep_bcc */
    size_t nbcc;
    int keep_bcc;        /* write Bcc: (a Drafts copy to be edited again) */
    const char *subject; /* UTF-8, NULL or "" for none; HTAB allowed,
                            other control characters refused */
    const char *text;    /* body, UTF-8, any line ends (CRLF, LF, CR),
                            NULL only if text_len is 0 */
    size_t text_len;
    const struct mime_compose_attach *attach;
    size_t nattach;
    int64_t date;                /* unix seconds, written in UTC; > 0 */
    const char *msgid_domain;    /* the node's host name */
    const unsigned char *random; /* MIME_COMPOSE_RANDOM_LEN bytes */
    const char *in_reply_to;     /* one msg-id "<left@right>", or NULL */
    const char *references;      /* msg-ids separated by SP, or NULL */
    int receipt;     /* Disposition-Notification-To: the From (RFC 8098) */
    size_t max_size; /* the composed message, octets; 0 = no limit of
                        its own (out->max still applies) */
};

/*
 * Append the message to out. Returns 0; RM_E_INVAL for a NULL or invalid
 * field (bad address syntax, control characters in a name or subject,
 * malformed UTF-8 anywhere, a bad type or msg-id, date <= 0, nattach or
 * recipients past their bounds, random NULL); RM_E_TOOBIG when the
 * message would pass max_size (or out->max); -ENOMEM. Header injection
 * is impossible: CR, LF and other control characters in names, subject,
 * file names and msg-ids are refused, never written.
 * On any error out is left as it was (len restored).
 * msgid, if not NULL, receives the Message-ID written ("<...@domain>",
 * NUL-terminated) on success.
 */
int mime_compose(const struct mime_compose_msg *m, struct buf *out,
                 char msgid[MIME_COMPOSE_MSGID_SIZE]);

/*
 * Length of the well-formed UTF-8 sequence at p (RFC 3629 §4: no
 * overlongs, no surrogates, nothing past U+10FFFF) that starts with a
 * non-ASCII octet p[0]: 2 to 4, or 0 when it is malformed or passes
 * avail (avail >= 1). ASCII octets are the caller's business: 0 too.
 */
size_t mime_compose_utf8_len(const unsigned char *p, size_t avail);

/* RFC 5322 §3.3 date-time in UTC ("Sun, 29 Nov 2026 09:31:37 +0000").
   0, or RM_E_INVAL for t < 0 or past year 9999. */
int mime_compose_date(int64_t t, char out[MIME_COMPOSE_DATE_SIZE]);

/* The MIME type for a file name by its extension (a small table,
   case-insensitive); "application/octet-stream" when unknown. Static
   storage. */
const char *mime_compose_guess_type(const char *filename);

#endif
