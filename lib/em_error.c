/* SPDX-License-Identifier: Apache-2.0 */
/* The project error enum's names and descriptions, from the one X-macro. */
#include "em_error.h"

static const char *const em_err_desc[] = {
#define EM_ERR_DESC_(name, desc) desc,
    EM_ERRNO_MAP(EM_ERR_DESC_)
#undef EM_ERR_DESC_
};

static const char *const em_err_name[] = {
#define EM_ERR_NAME_(name, desc) #name,
    EM_ERRNO_MAP(EM_ERR_NAME_)
#undef EM_ERR_NAME_
};

const char *em_strerror(em_err_t err) {
    if ((unsigned)err >= EM_ERR_COUNT_)
        return "unknown error";
    return em_err_desc[err];
}

const char *em_errname(em_err_t err) {
    if ((unsigned)err >= EM_ERR_COUNT_)
        return "EUNKNOWN";
    return em_err_name[err];
}
