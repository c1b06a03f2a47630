// Package tlsfiles loads the certificate files an operator points the
// daemon at.
package tlsfiles

import (
	"crypto/x509"
	"fmt"
	"os"
)

// SystemPoolWith is the system's CA pool plus the PEM certificates in
// file (none when file is ""). A file without a certificate is an error:
// silently trusting only the system would fail later, and less clearly.
func SystemPoolWith(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if file == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}
