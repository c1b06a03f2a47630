package store

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestLastAdminCannotBeRemoved(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	admin, err := s.CreateUser("admin", "pw-admin", true, RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	viewer, err := s.CreateUser("viewer", "pw-viewer", true, RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	no, demote := false, RoleViewer
	for name, upd := range map[string]UserUpdate{"disable": {CanLogin: &no}, "demote": {Role: &demote}} {
		if _, err := s.UpdateUser(admin.ID, upd); !errors.Is(err, ErrLastAdmin) {
			t.Errorf("%s the last admin: %v, want ErrLastAdmin", name, err)
		}
	}
	if err := s.DeleteUser(admin.ID); !errors.Is(err, ErrLastAdmin) {
		t.Errorf("delete the last admin: %v, want ErrLastAdmin", err)
	}
	// A viewer can go; it was never an admin.
	if _, err := s.UpdateUser(viewer.ID, UserUpdate{CanLogin: &no}); err != nil {
		t.Errorf("disable a viewer: %v", err)
	}
	// With a second admin, the first may be demoted, and then the second is
	// the last one.
	promote := RoleAdmin
	yes := true
	if _, err := s.UpdateUser(viewer.ID, UserUpdate{Role: &promote, CanLogin: &yes}); err != nil {
		t.Fatal(err)
	}
	if u, err := s.UpdateUser(admin.ID, UserUpdate{Role: &demote}); err != nil || u.Role != RoleViewer {
		t.Fatalf("demote with another admin: %+v, %v", u, err)
	}
	if err := s.DeleteUser(viewer.ID); !errors.Is(err, ErrLastAdmin) {
		t.Errorf("delete the new last admin: %v, want ErrLastAdmin", err)
	}
	if _, err := s.CreateUser("x", "pw", true, Role("root")); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown role: %v, want ErrInvalid", err)
	}
}

func TestPasswordChangeKeepsOnlyTheCallersToken(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	u, _ := s.CreateUser("admin", "pw-old", true, RoleAdmin)
	mine, _, _ := s.IssueToken(u.ID, time.Hour)
	other, _, _ := s.IssueToken(u.ID, time.Hour)
	pw := "pw-new"
	if _, err := s.UpdateUser(u.ID, UserUpdate{Password: &pw, KeepToken: mine}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.LookupToken(mine); err != nil {
		t.Errorf("the caller's token died: %v", err)
	}
	if _, _, err := s.LookupToken(other); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("another session survived a password change: %v", err)
	}
}

func TestDigestHA1FollowsThePassword(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	u, _ := s.CreateUser("Frigate", "pw-1", true, RoleViewer)
	want := func(pw string) string {
		h := md5.Sum([]byte("Frigate:" + DigestRealm + ":" + pw))
		return hex.EncodeToString(h[:])
	}
	ha1, got, ok, err := s.DigestHA1("frigate")
	if err != nil || !ok || ha1 != want("pw-1") || got.ID != u.ID {
		t.Fatalf("DigestHA1 = %q, %v, %v; want the HA1 of pw-1", ha1, ok, err)
	}
	pw := "pw-2"
	if _, err := s.UpdateUser(u.ID, UserUpdate{Password: &pw}); err != nil {
		t.Fatal(err)
	}
	if ha1, _, _, _ := s.DigestHA1("Frigate"); ha1 != want("pw-2") {
		t.Errorf("after a password change HA1 = %q, want that of pw-2", ha1)
	}
	// The stored value is sealed: the HA1 is not in the file in clear.
	err = s.db.View(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketUsers, bucketUserDigests} {
			v := tx.Bucket(b).Get(itob(u.ID))
			if v == nil && string(b) == string(bucketUserDigests) {
				t.Error("no digest stored")
			}
			if contains(v, []byte(want("pw-2"))) {
				t.Errorf("the HA1 is stored in clear in %s", b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	name := "Frigate2"
	if _, err := s.UpdateUser(u.ID, UserUpdate{Username: &name}); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := s.DigestHA1("Frigate2"); ok {
		t.Error("a renamed account kept an HA1 computed for its old name")
	}
	// The next login with the password gives it one for its new name.
	if _, err := s.Authenticate("frigate2", "pw-2"); err != nil {
		t.Fatal(err)
	}
	if ha1, _, ok, _ := s.DigestHA1("Frigate2"); !ok || ha1 != hex.EncodeToString(md5sum("Frigate2:"+DigestRealm+":pw-2")) {
		t.Error("a password login did not store the renamed account's HA1")
	}
	no := false
	pw = "pw-3"
	if _, err := s.UpdateUser(u.ID, UserUpdate{Password: &pw, CanLogin: &no}); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := s.DigestHA1("Frigate2"); ok {
		t.Error("an account that may not log in has a usable HA1")
	}
	if _, _, ok, err := s.DigestHA1("nobody"); ok || err != nil {
		t.Errorf("unknown user: %v, %v", ok, err)
	}
}

func TestMigrationMakesExistingUsersAdmins(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTest(t, dir)
	// A version 1 database: a user record without a role.
	err := s.db.Update(func(tx *bbolt.Tx) error {
		if err := putJSON(tx.Bucket(bucketUsers), itob(7), map[string]any{"id": 7, "username": "old", "can_login": true, "password_hash": "x"}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUsersByName).Put([]byte("old"), itob(7)); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(schemaVersionKey, itob(1))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, _ := openTest(t, dir)
	u, err := s2.UserByName("OLD")
	if err != nil || u.Role != RoleAdmin {
		t.Fatalf("migrated user = %+v, %v; want role admin", u, err)
	}
}

func md5sum(s string) []byte {
	h := md5.Sum([]byte(s))
	return h[:]
}

func contains(haystack, needle []byte) bool {
	for i := 0; i+len(needle) <= len(haystack); i++ {
		if string(haystack[i:i+len(needle)]) == string(needle) {
			return true
		}
	}
	return false
}
