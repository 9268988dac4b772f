"""Data: catalogs in RecBole atomic files, the dataset registry (name → loader), the leave-one-out split and sampling."""
