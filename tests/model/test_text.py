from aduan.model.text import normalize_text


def test_text_repairs_mojibake():
    assert normalize_text("jalan rusak â€” tolong") == "jalan rusak — tolong"
    assert "Ã" not in normalize_text("CafÃ© depan pasar")


def test_text_masks_phone_numbers():
    for phone in ("081234567890", "0812-3456-7890", "+62 812 3456 7890", "62812345678"):
        assert normalize_text(f"hubungi {phone} segera") == "hubungi [TELEPON] segera", phone


def test_text_masks_nik_and_email():
    out = normalize_text("NIK 3578012345678901 email budi.s@mail.co.id")
    assert out == "NIK [NIK] email [EMAIL]"


def test_text_keeps_ordinary_numbers_and_collapses_whitespace():
    assert normalize_text("  RT 05\n\tRW 02  no. 389 ") == "RT 05 RW 02 no. 389"
    # 15 or 17 digits are not a NIK
    assert normalize_text("nomor 123456789012345") == "nomor 123456789012345"


def test_text_is_idempotent():
    once = normalize_text("CafÃ©  0812 3456 7890  x@y.id")
    assert normalize_text(once) == once
