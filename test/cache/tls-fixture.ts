// A self-signed certificate for 127.0.0.1 and localhost (P-256, valid until 2126), made for these
// tests with `openssl req -x509`: a gateway that really speaks TLS, so `$scheme` is `https` from the
// socket itself. Test use only.
export const TLS_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgk0jA8JHPU8EG6uUf
48KLc0zsaW9mw5Zmhn/51Rtu6zmhRANCAAThSARF3hvXayYye9sz1eMMtXR9O6Pd
spjrFYfWzjM3vzTMHVaWGlUXIlARmbuoo4g8mUlaB8XHr7gMqFGinv0O
-----END PRIVATE KEY-----
`;

export const TLS_CERT = `-----BEGIN CERTIFICATE-----
MIIBmjCCAUGgAwIBAgIUQBKkW1udblQ7eAjr8xlH4RdFAeAwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNjEzMzIxN1oYDzIxMjYxMTEy
MTMzMjE3WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAThSARF3hvXayYye9sz1eMMtXR9O6PdspjrFYfWzjM3vzTMHVaWGlUX
IlARmbuoo4g8mUlaB8XHr7gMqFGinv0Oo28wbTAdBgNVHQ4EFgQU+MYPdpKLKsO5
6MCwJ/U96a45VXgwHwYDVR0jBBgwFoAU+MYPdpKLKsO56MCwJ/U96a45VXgwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDRwAwRAIgQDBe9M1DFb34JRcJI6Kk7mLsWsJ/OW5Pl9w4hC+HVT4CICQ4
t0PHqEhPJrWMOl8AUEZqUeghEPbvhEILGOpg/qRg
-----END CERTIFICATE-----
`;
