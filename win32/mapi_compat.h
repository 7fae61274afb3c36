/*
 * mapi_compat: the Simple MAPI declarations relaymesh-mapi.dll implements,
 * taken from Wine's mapi.h (libwine-dev; the build passes its path as
 * RM_WINE_MAPI_H) and corrected where Wine 8's header differs from
 * Microsoft's documentation.
 *
 * References: the Simple MAPI reference on learn.microsoft.com
 * ("Simple MAPI", windows/win32/api/mapi/: MAPILogon, MAPIReadMail, ...,
 * and the MapiMessage / MapiRecipDesc / MapiFileDesc structures) and the
 * Windows SDK's mapi.h, whose values the constants below repeat.
 *
 * What Wine 8's header gets wrong or lacks:
 *   - MAPIReadMail's last parameter is declared lpMapiMessage; Microsoft
 *     documents lpMapiMessage FAR *lppMessage (the function returns a
 *     pointer to a buffer it allocates). The Wine declaration is renamed
 *     out of the way around the #include and the documented one declared.
 *   - The MapiMessage flags (MAPI_UNREAD, MAPI_RECEIPT_REQUESTED,
 *     MAPI_SENT), the MAPIFindNext / MAPIReadMail flags and a few others
 *     are missing; each is defined here (#ifndef) with the SDK's value.
 *   - MAPI_E_ATTACHMENT_TOO_LARGE (28) is missing.
 *
 * Every export is stdcall on x86 (FAR PASCAL = WINAPI); the names are
 * undecorated through relaymesh-mapi.def. Usable by the DLL and by test
 * programs that load it (they declare function pointers with the
 * LPMAPI* typedefs).
 */
#ifndef RM_WIN32_MAPI_COMPAT_H
#define RM_WIN32_MAPI_COMPAT_H

#include <windows.h>

#ifndef RM_WINE_MAPI_H
#error "RM_WINE_MAPI_H must name Wine's mapi.h (the build defines it)"
#endif

/* Wine 8 declares MAPIREADMAIL with lpMapiMessage instead of
 * lpMapiMessage *: park its names, declare the documented ones below. */
#define MAPIReadMail rm_wine_MAPIReadMail_misdeclared
#define MAPIREADMAIL rm_wine_MAPIREADMAIL_misdeclared
#define LPMAPIREADMAIL rm_wine_LPMAPIREADMAIL_misdeclared
#include RM_WINE_MAPI_H
#undef MAPIReadMail
#undef MAPIREADMAIL
#undef LPMAPIREADMAIL

/* MAPIReadMail, as documented: "ULONG FAR PASCAL MAPIReadMail(LHANDLE
 * lhSession, ULONG_PTR ulUIParam, LPSTR lpszMessageID, FLAGS flFlags,
 * ULONG ulReserved, lpMapiMessage FAR *lppMessage)". */
typedef ULONG(WINAPI MAPIREADMAIL)(LHANDLE lhSession, ULONG_PTR ulUIParam,
                                   LPSTR lpszMessageID, FLAGS flFlags,
                                   ULONG ulReserved, lpMapiMessage *lppMessage);
typedef MAPIREADMAIL *LPMAPIREADMAIL;
MAPIREADMAIL MAPIReadMail;

/* ---- MapiMessage.flFlags (MapiMessage structure) ------------------------ */
#ifndef MAPI_UNREAD
#define MAPI_UNREAD 0x00000001 /* the message has not been read */
#endif
#ifndef MAPI_RECEIPT_REQUESTED
#define MAPI_RECEIPT_REQUESTED 0x00000002 /* a receipt notification */
#endif
#ifndef MAPI_SENT
#define MAPI_SENT 0x00000004 /* the message has been sent */
#endif

/* ---- MAPISendMail / MAPISendMailW (Windows 8 SDK mapi.h) --------------- */
#ifndef MAPI_DIALOG_MODELESS
#define MAPI_DIALOG_MODELESS (0x00000004 | MAPI_DIALOG)
#endif

/* ---- MapiFileDesc.flFlags (MapiFileDesc structure) ---------------------- */
#ifndef MAPI_OLE
#define MAPI_OLE 0x00000001
#endif
#ifndef MAPI_OLE_STATIC
#define MAPI_OLE_STATIC 0x00000002
#endif

/* ---- MAPIFindNext flags (MAPIFindNext) ---------------------------------- */
#ifndef MAPI_UNREAD_ONLY
#define MAPI_UNREAD_ONLY 0x00000020 /* only unread messages */
#endif
#ifndef MAPI_GUARANTEE_FIFO
#define MAPI_GUARANTEE_FIFO 0x00000100 /* ids in order of receipt */
#endif
#ifndef MAPI_LONG_MSGID
#define MAPI_LONG_MSGID 0x00004000 /* caller's id buffer holds 512 */
#endif

/* ---- MAPIReadMail flags (MAPIReadMail) ---------------------------------- */
#ifndef MAPI_PEEK
#define MAPI_PEEK 0x00000080 /* do not mark the message read */
#endif
#ifndef MAPI_ENVELOPE_ONLY
#define MAPI_ENVELOPE_ONLY 0x00000040 /* header only: no text, no files */
#endif
#ifndef MAPI_BODY_AS_FILE
#define MAPI_BODY_AS_FILE 0x00000200 /* text as the first attachment */
#endif
#ifndef MAPI_SUPPRESS_ATTACH
#define MAPI_SUPPRESS_ATTACH 0x00000800 /* no attachment files */
#endif

/* ---- MAPIDetails / MAPIResolveName flag (MAPIDetails) ------------------- */
#ifndef MAPI_AB_NOMODIFY
#define MAPI_AB_NOMODIFY 0x00000400
#endif

/* ---- return codes (Windows SDK mapi.h) ---------------------------------- */
#ifndef MAPI_E_UNICODE_NOT_SUPPORTED
#define MAPI_E_UNICODE_NOT_SUPPORTED 27
#endif
#ifndef MAPI_E_ATTACHMENT_TOO_LARGE
/* Windows SDK mapi.h (and Microsoft's Win32 API metadata, as published in
 * the windows-sys crate's Win32::System::Mapi): value 28. */
#define MAPI_E_ATTACHMENT_TOO_LARGE 28
#endif

/* Message identifier buffer sizes the caller provides (MAPIFindNext:
 * "at least 64 characters", 512 with MAPI_LONG_MSGID). */
#define MAPI_MSGID_SHORT 64
#define MAPI_MSGID_LONG 512

/* Not Simple MAPI: the DLL's fault-injection switch for tests (alloc.c).
 * Arms a failure of the n-th allocation from now on (n <= 0 disarms);
 * returns 1 if the previously armed failure fired, else 0. */
typedef LONG(WINAPI RELAYMESHFAULTINJECT)(LONG n);
typedef RELAYMESHFAULTINJECT *LPRELAYMESHFAULTINJECT;
RELAYMESHFAULTINJECT RelaymeshFaultInject;

#endif
