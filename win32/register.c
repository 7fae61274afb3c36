/*
 * register: DllMain, and registration as the system's Simple MAPI mail
 * client (regsvr32 relaymesh-mapi.dll / regsvr32 /u ...).
 *
 * Windows' mapi32.dll (and Wine's) finds the Simple MAPI provider through
 *   HKLM\Software\Clients\Mail              (default) = client name
 *   HKLM\Software\Clients\Mail\<name>       DLLPath   = provider DLL
 * A 32-bit DLL registered on 64-bit Windows writes to the 32-bit registry
 * view (WOW6432Node), which is what 32-bit programs' mapi32 reads.
 * relaymesh-mapi.reg holds the same values for an installed copy.
 */
#include <string.h>

#include "mapi_int.h"

#define REG_MAIL L"Software\\Clients\\Mail"
#define REG_CLIENT L"relaymesh"
#define REG_KEY REG_MAIL L"\\" REG_CLIENT

static HMODULE self_module;

BOOL WINAPI DllMain(HINSTANCE inst, DWORD reason, LPVOID reserved);
STDAPI DllRegisterServer(void);
STDAPI DllUnregisterServer(void);

BOOL WINAPI
DllMain(HINSTANCE inst, DWORD reason, LPVOID reserved)
{
    switch (reason) {
    case DLL_PROCESS_ATTACH:
        self_module = inst;
        DisableThreadLibraryCalls(inst);
        mapi_attach();
        break;
    case DLL_PROCESS_DETACH:
        /* At process exit (reserved != NULL) other threads are gone,
         * perhaps inside a call: leave the locks alone. */
        if (reserved == NULL)
            mapi_detach();
        break;
    default:
        break;
    }
    return TRUE;
}

static LSTATUS
set_sz(HKEY key, const WCHAR *name, const WCHAR *value)
{
    return RegSetValueExW(key, name, 0, REG_SZ, (const BYTE *)value,
                          (DWORD)((wcslen(value) + 1) * sizeof(WCHAR)));
}

STDAPI
DllRegisterServer(void)
{
    WCHAR path[4096];
    HKEY key;
    DWORD n;
    LSTATUS e;

    n = GetModuleFileNameW(self_module, path, sizeof(path) / sizeof(path[0]));
    if (n == 0 || n >= sizeof(path) / sizeof(path[0])) {
        mapi_log("event=register_failed why=\"no module path\" error=%lu",
                 (unsigned long)GetLastError());
        return HRESULT_FROM_WIN32(n == 0 ? GetLastError()
                                         : ERROR_INSUFFICIENT_BUFFER);
    }
    e = RegCreateKeyExW(HKEY_LOCAL_MACHINE, REG_KEY, 0, NULL, 0, KEY_SET_VALUE,
                        NULL, &key, NULL);
    if (e == ERROR_SUCCESS) {
        e = set_sz(key, NULL, REG_CLIENT);
        if (e == ERROR_SUCCESS)
            e = set_sz(key, L"DLLPath", path);
        RegCloseKey(key);
    }
    if (e == ERROR_SUCCESS) {
        e = RegCreateKeyExW(HKEY_LOCAL_MACHINE, REG_MAIL, 0, NULL, 0,
                            KEY_SET_VALUE, NULL, &key, NULL);
        if (e == ERROR_SUCCESS) {
            e = set_sz(key, NULL, REG_CLIENT);
            RegCloseKey(key);
        }
    }
    if (e != ERROR_SUCCESS) {
        mapi_log("event=register_failed key=HKLM\\%ls error=%ld "
                 "hint=\"run as administrator\"",
                 REG_KEY, (long)e);
        return HRESULT_FROM_WIN32((DWORD)e);
    }
    mapi_log("event=registered dll=\"%ls\"", path);
    return S_OK;
}

STDAPI
DllUnregisterServer(void)
{
    WCHAR cur[64];
    DWORD type, size = sizeof(cur) - sizeof(WCHAR);
    HKEY key;
    LSTATUS e;

    e = RegDeleteKeyW(HKEY_LOCAL_MACHINE, REG_KEY);
    if (e != ERROR_SUCCESS && e != ERROR_FILE_NOT_FOUND) {
        mapi_log("event=unregister_failed key=HKLM\\%ls error=%ld", REG_KEY,
                 (long)e);
        return HRESULT_FROM_WIN32((DWORD)e);
    }
    e = RegOpenKeyExW(HKEY_LOCAL_MACHINE, REG_MAIL, 0,
                      KEY_QUERY_VALUE | KEY_SET_VALUE, &key);
    if (e == ERROR_FILE_NOT_FOUND)
        return S_OK;
    if (e != ERROR_SUCCESS)
        return HRESULT_FROM_WIN32((DWORD)e);
    memset(cur, 0, sizeof(cur));
    e = RegQueryValueExW(key, NULL, NULL, &type, (BYTE *)cur, &size);
    /* The default client is cleared only when it is still us. */
    if (e == ERROR_SUCCESS && type == REG_SZ && lstrcmpiW(cur, REG_CLIENT) == 0)
        e = RegDeleteValueW(key, NULL);
    else
        e = ERROR_SUCCESS;
    RegCloseKey(key);
    if (e != ERROR_SUCCESS && e != ERROR_FILE_NOT_FOUND)
        return HRESULT_FROM_WIN32((DWORD)e);
    return S_OK;
}
