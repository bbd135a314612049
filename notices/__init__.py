"""Payment notices (缴款通知书): numbers, issuing, cancelling, expiry, the printed notice."""
