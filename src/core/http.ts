// HTTP grammar the factories validate options against.

/** RFC 9110 `token`: header names, methods, cookie names. */
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
