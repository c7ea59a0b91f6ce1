// Package seal encrypts the secrets nixmox-server keeps (Terraform's
// sensitive outputs) so that the state file never holds them in plaintext:
// AES-256-GCM with a key kept in its own owner-only file beside the state,
// and the secret's name as additional data, so a sealed value moved to
// another name does not open.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Key seals and opens values.
type Key struct {
	aead cipher.AEAD
}

// LoadOrCreate reads the 32-byte key at path, creating it (0600, by temp
// file and rename) the first time.
func LoadOrCreate(path string) (*Key, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		raw = make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		tmp, err := os.CreateTemp(filepath.Dir(path), ".secrets-key-*")
		if err != nil {
			return nil, err
		}
		_, werr := tmp.Write(raw)
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr == nil {
			werr = os.Rename(tmp.Name(), path)
		}
		if werr != nil {
			os.Remove(tmp.Name())
			return nil, werr
		}
	} else if err != nil {
		return nil, err
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("%s: a secrets key is 32 bytes, this file has %d", path, len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Key{aead: aead}, nil
}

// Seal encrypts value for name.
func (k *Key) Seal(name string, value []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(nonce, nonce, value, []byte(name)), nil
}

// Open decrypts what Seal sealed for name.
func (k *Key) Open(name string, sealed []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < n {
		return nil, fmt.Errorf("sealed value of %s is too short", name)
	}
	out, err := k.aead.Open(nil, sealed[:n], sealed[n:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("sealed value of %s does not open with this server's key", name)
	}
	return out, nil
}
