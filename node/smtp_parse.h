/*
 * smtp_parse: pure, resumable SMTP tokenizers (server side).
 *
 * No I/O, no allocation, no globals: every function works on the bytes it
 * is given and on caller-owned state, and returns slices into the input.
 * That is what makes them unit-testable and fuzzable (fuzz/fuzz_smtp_cmd.c).
 *
 * Three layers:
 *   1. smtp_line_next(): split a command stream into CRLF lines with a
 *      length limit (RFC 5321 §4.5.3.1.4), resumable across reads.
 *   2. smtp_cmd_parse(): one command line into verb + arguments; MAIL and
 *      RCPT paths and ESMTP parameters (RFC 5321 §4.1.2, RFC 1870, 6152,
 *      6531, 3461, 3030).
 *   3. smtp_data_feed(): the DATA body: dot-unstuffing, the CRLF.CRLF end
 *      (and only that), bare CR / bare LF detection (SMTP smuggling),
 *      header-section accounting.
 */
#ifndef RM_SMTP_PARSE_H
#define RM_SMTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* A slice of the caller's input; not NUL-terminated. */
struct smtp_slice {
    const char *p;
    size_t len;
};

/* ---- 1. lines ------------------------------------------------------- */

enum smtp_tok {
    SMTP_TOK_AGAIN = 0,   /* need more input; everything given consumed
                             or kept (see smtp_line_next) */
    SMTP_TOK_LINE = 1,    /* a complete line (without CRLF) */
    SMTP_TOK_TOOLONG = 2, /* a line passed the limit; its bytes up to and
                             including its CRLF are discarded, then this is
                             reported once */
    SMTP_TOK_BARELF = 3   /* a line ended in LF without CR: reported as a
                             line error (the line is discarded) */
};

struct smtp_line_state {
    size_t max;     /* longest line accepted, CRLF included (§4.5.3.1.4:
                       512) */
    int discarding; /* inside an over-long line, dropping until LF */
};

void smtp_line_init(struct smtp_line_state *ls, size_t max);

/*
 * Look for the next line in in[0..len). On SMTP_TOK_LINE, *line is the
 * line without its CRLF and *used the bytes consumed (line + CRLF). On
 * SMTP_TOK_AGAIN, *used is the number of bytes the caller may drop (0
 * normally: the caller keeps the partial line and calls again with more
 * appended; while discarding an over-long line, all of it). When the
 * partial line in[0..len) already exceeds max without a LF, the state
 * switches to discarding, *used = len, and SMTP_TOK_AGAIN is returned;
 * SMTP_TOK_TOOLONG follows when its LF arrives. For SMTP_TOK_TOOLONG and
 * SMTP_TOK_BARELF, *used covers the bad line including its LF; *line
 * is {NULL, 0} for every result but SMTP_TOK_LINE. The caller's buffer
 * must hold max bytes plus one read: a partial line shorter than max is
 * kept by the caller, a longer one is dropped here.
 */
enum smtp_tok smtp_line_next(struct smtp_line_state *ls, const char *in,
                             size_t len, struct smtp_slice *line, size_t *used);

/* ---- 2. commands ---------------------------------------------------- */

enum smtp_verb {
    SMTP_V_UNKNOWN = 0,
    SMTP_V_HELO,
    SMTP_V_EHLO,
    SMTP_V_MAIL,
    SMTP_V_RCPT,
    SMTP_V_DATA,
    SMTP_V_BDAT,
    SMTP_V_RSET,
    SMTP_V_NOOP,
    SMTP_V_VRFY,
    SMTP_V_EXPN,
    SMTP_V_HELP,
    SMTP_V_QUIT,
    SMTP_V_STARTTLS,
    SMTP_V_AUTH,
    SMTP_V__COUNT
};

const char *smtp_verb_name(enum smtp_verb v);

/* Maximum ESMTP parameters on one MAIL or RCPT line we look at. */
#define SMTP_PARAMS_MAX 16

struct smtp_param {
    struct smtp_slice key;   /* e.g. "SIZE" (case as sent) */
    struct smtp_slice value; /* len 0 and p NULL when no "=value" */
};

enum smtp_perr {
    SMTP_PERR_OK = 0,
    SMTP_PERR_SYNTAX,       /* 501 5.5.2 / 5.5.4 command syntax */
    SMTP_PERR_PATH,         /* 501 5.1.3 / 5.1.7 bad address syntax */
    SMTP_PERR_PATH_TOOLONG, /* 501 5.1.3 path > 256 / local > 64 /
                               domain > 255 (§4.5.3.1) */
    SMTP_PERR_PARAM,        /* 555 5.5.4 unknown or malformed parameter */
    SMTP_PERR_PARAM_DUP,    /* 555 5.5.4 parameter given twice */
    SMTP_PERR_TOOMANY,      /* 555 5.5.4 more than SMTP_PARAMS_MAX */
    SMTP_PERR_UTF8          /* 553 5.6.7 non-ASCII address without
                               SMTPUTF8 (RFC 6531 §3.4) */
};

const char *smtp_perr_text(enum smtp_perr e);

struct smtp_cmd {
    enum smtp_verb verb;
    struct smtp_slice verb_word; /* the verb as sent */
    struct smtp_slice arg;       /* everything after verb and one SP,
                                    trailing spaces removed; empty if none */
    /* MAIL / RCPT only: */
    struct smtp_slice path; /* address inside <>, source route
                               removed; empty for <> (null path) */
    int null_path;          /* MAIL FROM:<> */
    int path_utf8;          /* path has non-ASCII bytes */
    struct smtp_param params[SMTP_PARAMS_MAX];
    size_t nparams;
};

/*
 * Parse one command line (no CRLF). Always fills cmd->verb (UNKNOWN for an
 * unknown verb) and verb_word/arg. For MAIL and RCPT it also parses
 * "FROM:"/"TO:", the path (RFC 5321 §4.1.2 Path / Mailbox, with quoted
 * local parts, address literals, and RFC 6531 UTF-8 when utf8_ok) and the
 * parameter list syntax; it does not judge which parameters are allowed
 * (the session does that with smtp_param_* helpers below).
 * RCPT TO:<Postmaster> (no domain) is accepted as a path (§4.1.1.3).
 * Returns SMTP_PERR_OK or the first error.
 *
 * All slices point into line[0..len) and live as long as it does; cmd is
 * fully overwritten. Details:
 *  - An empty line or an unknown verb is SMTP_V_UNKNOWN with SMTP_PERR_OK
 *    (the session answers 500 5.5.1). Any control byte (< 0x20 or 0x7f,
 *    NUL and TAB included) anywhere in the line is SMTP_PERR_SYNTAX, for
 *    every verb (verb and arg are still filled in).
 *  - MAIL/RCPT: "FROM:" / "TO:" (any case), then at most one SP (RFC 5321
 *    has none; clients send one), then the path, then 1*SP-separated
 *    parameters. A missing keyword is SYNTAX; a path that is not <...> or
 *    does not parse is PATH. A source route "<@a,@b:x@y>" is checked and
 *    dropped (§4.1.1.3, App. C). Limits: local-part 64 (§4.5.3.1.1),
 *    domain 255 (§4.5.3.1.2), "<" path ">" 256 (§4.5.3.1.3), measured on
 *    the path we keep (source route dropped).
 *  - utf8_ok: the server offers SMTPUTF8 on this session. Then UTF-8
 *    (well-formed, RFC 3629) is allowed in local parts, domains (U-labels)
 *    and parameter values (RFC 6531 §3.3) and path_utf8 says whether the
 *    path used it; whether the transaction declared SMTPUTF8 (RFC 6531
 *    §3.4) is for the session to check. Without utf8_ok any byte >= 0x80
 *    in the path is SMTP_PERR_UTF8, in a parameter SMTP_PERR_PARAM; with
 *    it, malformed UTF-8 is PATH / PARAM.
 */
enum smtp_perr smtp_cmd_parse(const char *line, size_t len, int utf8_ok,
                              struct smtp_cmd *cmd);

/* Case-insensitive compare of a slice with a C string. */
int smtp_slice_eq(struct smtp_slice s, const char *lit);

/* SIZE=n (RFC 1870): decimal, at most 20 digits, no overflow. 0 / -1. */
int smtp_param_size(struct smtp_slice v, uint64_t *out);
/* xtext (RFC 3461 §4): valid syntax? ENVID and ORCPT values. 0 / -1.
   An empty value is -1 (esmtp-value is 1*, RFC 5321 §4.1.2). */
int smtp_param_xtext_ok(struct smtp_slice v);
/* ORCPT=addr-type ";" xtext (RFC 3461 §4.2), addr-type an atom, the
   xtext non-empty. 0 / -1. */
int smtp_param_orcpt_ok(struct smtp_slice v);
/* NOTIFY=NEVER | SUCCESS,FAILURE,DELAY (RFC 3461 §4.1). Bits as in
   store.h STORE_NOTIFY_*: NEVER=1 SUCCESS=2 FAILURE=4 DELAY=8. 0 / -1
   (NEVER combined with others is an error). */
int smtp_param_notify(struct smtp_slice v, unsigned *out);

/* Split a BDAT argument "n [LAST]" (RFC 3030 §2): cmd->arg of a BDAT
   line. chunk-size is 1*DIGIT (leading zeros allowed, must fit uint64_t),
   then nothing or exactly one SP and "LAST" (any case). 0 / -1. */
int smtp_bdat_arg(struct smtp_slice arg, uint64_t *size, int *last);

/* ---- 3. message data ------------------------------------------------ */

enum smtp_data_res {
    SMTP_DATA_AGAIN = 0, /* all input consumed, message not finished */
    SMTP_DATA_END = 1,   /* CRLF.CRLF seen; *used stops right after it.
                            Also returned when a rule broke on the way:
                            check smtp_data_ok() / state->error */
    SMTP_DATA_ERROR = 2  /* smtp_bdat_feed / smtp_bdat_end only: a rule
                            broke (state->error or state->cb_error set).
                            smtp_data_feed never returns it: after an
                            error it goes on consuming (AGAIN) up to the
                            real CRLF.CRLF (END) so the session stays in
                            sync with the client */
};

enum smtp_data_err {
    SMTP_DERR_NONE = 0,
    SMTP_DERR_BARE_CR,      /* CR not followed by LF (RFC 5321 §2.3.8) */
    SMTP_DERR_BARE_LF,      /* LF not preceded by CR */
    SMTP_DERR_LINE_TOOLONG, /* text line > max_line (§4.5.3.1.6: 1000) */
    SMTP_DERR_HDR_TOOBIG,   /* header section > max_header */
    SMTP_DERR_TOOBIG,       /* message > max_size */
    SMTP_DERR_LOOP,         /* Received headers > max_received */
    SMTP_DERR_8BIT          /* 8-bit byte in a 7BIT body: accepted, noted */
};

/*
 * Callback receiving unstuffed message bytes in order, CRLF line ends
 * (converted when normalise is on). Return 0 to go on, non-zero to stop
 * the output: the value is kept in state->cb_error (errno-style, e.g.
 * buffer full), out is not called again, and the feed goes on scanning
 * to the end of data as after a rule error (the rules are still checked,
 * so state->error may be set as well).
 *
 * out is called only while state->error == SMTP_DERR_NONE and
 * state->cb_error == 0: it has received every message byte before the
 * byte that broke a rule and none after. Bytes passed to out never hold a
 * bare CR or a bare LF, and a CR is passed only together with its LF.
 * p points into the caller's input or into a constant; valid during the
 * call only.
 */
typedef int (*smtp_data_out)(void *arg, const char *p, size_t len);

/* Interesting header values, up to this many bytes each. */
#define SMTP_HDR_VALUE_MAX 256

struct smtp_data_state {
    /* limits, set by the caller (before or after smtp_data_init, which
       keeps them and replaces a 0 by the default shown) */
    size_t max_line;       /* text line incl. CRLF, not counting a
                              stuffing dot; 1000 (§4.5.3.1.6) */
    size_t max_header;     /* header section bytes: the lines before the
                              first empty line, CRLFs included; 102400
                              (Postfix's header_size_limit) */
    uint64_t max_size;     /* message bytes after unstuffing, CRLFs
                              included; default UINT64_MAX (none) */
    unsigned max_received; /* more Received: fields than this is a loop
                              (§6.3); 100 */
    int normalise;         /* 1: bare CR / LF become CRLF, not errors */
    /* results */
    enum smtp_data_err error; /* first error, or NONE */
    int cb_error;             /* non-zero return of out, or 0 */
    uint64_t size;            /* unstuffed bytes so far (bare line ends
                                 counted as CRLF); goes on counting after
                                 an error, for the log */
    unsigned received;        /* Received: headers seen */
    int in_header;            /* still in the header section */
    int saw_8bit;             /* a byte >= 0x80 was seen (never an error
                                 here: SMTP_DERR_8BIT is the session's) */
    /* First value of these headers, unfolded (a fold becomes one SP),
       trimmed, cut to SMTP_HDR_VALUE_MAX - 1 bytes (at a UTF-8 boundary),
       TAB turned into SP and other control bytes into '?', NUL-ended;
       "" if absent. Final once
       the header section ended; not updated after an error. */
    char from[SMTP_HDR_VALUE_MAX];
    char subject[SMTP_HDR_VALUE_MAX];
    char msgid[SMTP_HDR_VALUE_MAX];
    char date[SMTP_HDR_VALUE_MAX];
    /* private tokenizer state */
    int st;
    size_t line_len;
    size_t hdr_bytes;
    char hdr_name[32];
    size_t hdr_name_len;
    int hdr_which;
    size_t hdr_val_len;
    int crlf_bol;      /* the current line follows a real CRLF (or is the
                          first): only there can "." CRLF end the data */
    int hdr_phase;     /* in the header: reading a name, a value, or a line
                          that is no header field */
    size_t hdr_sp;     /* spaces held back inside the value (trimming) */
    int hdr_fold;      /* a fold is pending: it becomes one SP */
    int hdr_full;      /* the value being captured is full */
    unsigned hdr_done; /* bit per captured header: first one taken */
};

/*
 * Prepare ds for one message: results and tokenizer state reset, limits
 * and normalise kept (a 0 limit gets its default). Call it before every
 * message (DATA or the first BDAT).
 */
void smtp_data_init(struct smtp_data_state *ds);

/* 1 when the message passed every rule (error NONE and cb_error 0). */
int smtp_data_ok(const struct smtp_data_state *ds);

/*
 * Feed DATA-phase bytes, in pieces of any size (the result does not
 * depend on how the stream is cut). Unstuffed message bytes go to out
 * (which may be NULL, to just find the end). Stops after the
 * terminating CRLF.CRLF (SMTP_DATA_END, *used = bytes consumed including
 * it; bytes after it belong to the next command). The terminator's final
 * CRLF is the end of the last line and is part of the message; ".\r\n"
 * is not. ".\r\n" as the very first line ends an empty message. In
 * normalise mode a bare LF or bare CR ends a line (and a leading dot of
 * the next line is unstuffed) but the end of data is still only
 * CRLF.CRLF (LF.LF, CR.CR, LF.CRLF, CR.CRLF never end data).
 *
 * Errors (RFC 5321 §2.3.8, §4.5.3.1.6, §6.3, and the limits above) set
 * ds->error once (the first wins); from then on out is not called and
 * the function keeps returning SMTP_DATA_AGAIN (*used = len) until the
 * real CRLF.CRLF, where it returns SMTP_DATA_END. So the session feeds
 * until END, then accepts the message only if smtp_data_ok(ds).
 * After END, further calls return END with *used = 0.
 */
enum smtp_data_res smtp_data_feed(struct smtp_data_state *ds, const char *in,
                                  size_t len, size_t *used, smtp_data_out out,
                                  void *arg);

/*
 * Header accounting for BDAT bodies (no dot-stuffing, no terminator):
 * same header tracking, size, line, bare CR / LF (RFC 3030 §3 keeps
 * RFC 5321's line rules) and 8-bit rules as smtp_data_feed, applied
 * to raw chunk bytes in order; all of in is always consumed. Returns
 * SMTP_DATA_AGAIN or SMTP_DATA_ERROR (an error is set, now or earlier);
 * out receives the bytes unchanged (bare CR / LF turned into CRLF when
 * normalise is on), except that a CR ending a chunk is held back until
 * the next byte shows whether it is bare.
 */
enum smtp_data_res smtp_bdat_feed(struct smtp_data_state *ds, const char *in,
                                  size_t len, smtp_data_out out, void *arg);

/*
 * After the BDAT LAST chunk: a CR held back at the very end is bare
 * (SMTP_DERR_BARE_CR, or CRLF when normalising). A last line without
 * CRLF is left as it is. Returns SMTP_DATA_END, or SMTP_DATA_ERROR when
 * the message broke a rule (same as !smtp_data_ok(ds)).
 */
enum smtp_data_res smtp_bdat_end(struct smtp_data_state *ds, smtp_data_out out,
                                 void *arg);

#endif
